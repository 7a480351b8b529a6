"""TFDS builders at the 'small' config: build, read back, load, CLI."""

import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from icl_iwl import errors
from icl_iwl.data import build
from icl_iwl.data import builders
from icl_iwl.data import datasets
from icl_iwl.data import describe
from icl_iwl.data import schema
from icl_iwl.data import tokenizer

SMALL_COUNTS = {
    'reversals': {'train': 16, 'test_reversal': 8, 'test_forward': 8},
    'syllogisms': {'train': 12, 'test_conclusion': 12, 'test_control': 12},
    'reversal_curse': {'train': 54, 'test_p2d_reverse': 6, 'test_p2d_same': 6,
                       'test_d2p_reverse': 6, 'test_d2p_same': 6,
                       'test_both_name': 6, 'test_both_description': 6},
    'semantic': {'train': 42, 'test_rephrase': 59, 'test_reversal': 59,
                 'test_syllogism': 40, 'test_deduction': 21,
                 'test_holdout': 15},
    'ictrain': {'train': 180, 'test_iwl': 12, 'test_icl': 12, 'test_copy': 12},
}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  tfds.disable_progress_bar()
  path = tmp_path_factory.mktemp('tfds')
  build.build(builders.DATASETS.names(), 'small', str(path))
  return path


def read_all(source) -> list[dict]:
  return [schema.decode(source[i]) for i in range(len(source))]


def test_registry():
  assert builders.DATASETS.names() == sorted(SMALL_COUNTS)
  with pytest.raises(errors.UserError, match="Did you mean 'semantic'"):
    datasets.select('semantik')
  assert datasets.select('all') == sorted(SMALL_COUNTS)
  assert datasets.select('reversals, jsonl/mine') == ['reversals', 'jsonl/mine']
  with pytest.raises(errors.UserError, match='letters, digits'):
    datasets.select('jsonl/no way')
  with pytest.raises(errors.UserError, match="no config 'large'"):
    datasets.resolve('reversals', 'large')


def load(name, split, config, data_dir):
  return datasets.resolve(name, config, data_dir).source(split)


def test_counts_per_split(data_dir):
  for name, counts in SMALL_COUNTS.items():
    b = builders.builder(name, 'small', data_dir)
    assert {k: v.num_examples for k, v in b.info.splits.items()} == counts, name


def test_records_round_trip_with_typed_features(data_dir):
  for name in SMALL_COUNTS:
    module = getattr(builders, name)
    want = module.generate(module.SMALL)
    b = builders.builder(name, 'small', data_dir)
    fields = schema.union_fields(b.RECORD_KINDS)
    for split, records in want.items():
      source = tfds.data_source(f'{name}/small', split=split, data_dir=data_dir)
      got = {r['id']: r for r in read_all(source)}
      want_split = {r['id']: schema.complete(r, fields) for r in records}
      assert got == want_split, (name, split)
      kind = b.RECORD_KINDS[0] if split == 'train' else b.RECORD_KINDS[1]
      for r in got.values():
        assert schema.problem(r, kind) is None, (name, split, r)


def test_unused_fields_are_empty(data_dir):
  train = read_all(load('reversals', 'train', 'small', data_dir))
  assert all(r['prompt'] == '' and r['choices'] == [] and r['answer'] == -1
             for r in train)
  probes = read_all(
      load('reversals', 'test_reversal', 'small', data_dir))
  assert all(r['text'] == '' and r['prompt'] for r in probes)


def test_rebuild_gives_identical_records(data_dir, tmp_path):
  again = builders.builder('semantic', 'small', tmp_path)
  builders.base.prepare(again)
  for split in SMALL_COUNTS['semantic']:
    a = read_all(load('semantic', split, 'small', data_dir))
    b = read_all(load('semantic', split, 'small', tmp_path))
    assert a == b


def test_load_builds_when_missing(tmp_path):
  source = load('syllogisms', 'test_conclusion', 'small', tmp_path)
  assert len(source) == SMALL_COUNTS['syllogisms']['test_conclusion']
  version = str(builders.syllogisms.Syllogisms.VERSION)
  assert (tmp_path / 'syllogisms' / 'small' / version).is_dir()
  assert not list(tmp_path.rglob('*incomplete*'))
  assert not (tmp_path / 'downloads').exists()


def test_no_tensorflow_needed(tmp_path):
  code = ('import sys\n'
          'from icl_iwl.data import datasets\n'
          'n = len(datasets.resolve("reversals", "small", sys.argv[1]).source("train"))\n'
          'print(n, "tensorflow" in sys.modules)\n')
  out = subprocess.run([sys.executable, '-c', code, str(tmp_path)], check=True,
                       capture_output=True, text=True).stdout.splitlines()
  assert out[-1] == '16 False'


def test_describe_table(data_dir):
  rows = describe.describe(['reversals'], 'small', str(data_dir),
                           tokenizer.load_default())
  assert [(r.split, r.examples, r.choices) for r in rows] == [
      ('train', 16, '-'), ('test_reversal', 8, '2'), ('test_forward', 8, '2')]
  reversal = rows[1]
  # "glon are less dangerous than femp.": two 4-5 letter nonsense words.
  assert 7 <= reversal.min_tokens <= reversal.mean_tokens
  assert reversal.mean_tokens <= reversal.max_tokens <= 14
  assert [(r.version, r.chance) for r in rows] == [
      (str(builders.reversals.Reversals.VERSION), c) for c in (None, 0.5, 0.5)]
  table = describe.format_table(rows)
  assert table.splitlines()[0].startswith('| dataset')
  assert 'prior' not in table.splitlines()[0]
  assert f'| reversals/small | {rows[1].version}   | test_reversal |' in table
  # A prior scorer (here a stand-in) fills the prior column of probe splits.
  seen = []
  rows = describe.describe(['reversals'], 'small', str(data_dir),
                           tokenizer.load_default(),
                           lambda records: seen.append(len(records)) or 0.25)
  assert seen == [8, 8] and [r.prior for r in rows] == [None, 0.25, 0.25]
  header, _, first, second, _ = describe.format_table(rows).splitlines()
  assert 'prior' in header and '| - ' in first and '0.250' in second


def test_describe_builds_missing_datasets(tmp_path):
  rows = describe.describe(['syllogisms'], 'small', str(tmp_path),
                           tokenizer.load_default())
  assert {r.split: r.examples for r in rows} == SMALL_COUNTS['syllogisms']


def test_record_text():
  assert describe.record_text({'text': 'a b', 'choices': []}) == 'a b'
  assert describe.record_text(
      {'prompt': 'x are', 'choices': [' 1.', ' 2.'], 'answer': 1}) == 'x are 2.'
  assert describe.record_text(
      {'input': 'the dog', 'output': 'femp', 'choices': []}) == (
          'Input: the dog\nOutput: femp\n')  # Ends in the end marker.


def test_cli_build_and_describe(tmp_path):
  env = dict(os.environ, ICL_IWL_DATA_DIR=str(tmp_path))

  def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', *args], env=env,
                          capture_output=True, text=True)

  built = run('icl_iwl.data.build', '--datasets=reversals', '--config=small')
  assert built.returncode == 0, built.stderr
  assert ('reversals/small: train 16, test_reversal 8, test_forward 8'
          in built.stdout)
  shown = run('icl_iwl.data.describe', '--datasets=reversals', '--config=small')
  assert shown.returncode == 0, shown.stderr
  assert '| test_forward  |' in shown.stdout
  bad = run('icl_iwl.data.build', '--datasets=reversal', '--config=small')
  assert bad.returncode != 0 and "Did you mean 'reversals'" in bad.stderr
