"""The JSONL and Berglund importers: file:line errors, nothing half-written."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from icl_iwl.data import berglund
from icl_iwl.data import datasets
from icl_iwl.data import jsonl
from icl_iwl.data import schema
from icl_iwl.data.builders import user

DOCS = [{'text': 'femp are taller than glon.'}, {'text': 'Filler.', 'id': 'd2'}]
PROBES = [
    {'prompt': 'glon are',
     'choices': [' shorter than femp.', ' taller than femp.'],
     'answer': 0, 'facts': ['f1'], 'kind': 'reversal'},
    {'prompt': 'femp are', 'choices': [' taller than glon.'], 'answer': 0},
]
PAIRS = [{'input': 'the dog', 'output': 'femp', 'task': 'translation'}]


@pytest.fixture(autouse=True)
def _quiet():
  tfds.disable_progress_bar()


def write_lines(path, lines):
  path.write_text(''.join(
      (line if isinstance(line, str) else json.dumps(line)) + '\n'
      for line in lines))
  return path


def files_under(path) -> list[str]:
  return sorted(str(p.relative_to(path)) for p in path.rglob('*'))


def read_split(name, split, data_dir):
  source = datasets.resolve(f'jsonl/{name}', data_dir=data_dir).source(split)
  return sorted((schema.decode(source[i]) for i in range(len(source))),
                key=lambda r: r['id'])


def test_round_trip(tmp_path):
  docs = write_lines(tmp_path / 'docs.jsonl', DOCS)
  probes = write_lines(tmp_path / 'probes.jsonl', [PROBES[0], '', PROBES[1]])
  pairs = write_lines(tmp_path / 'pairs.jsonl', PAIRS)
  data_dir = tmp_path / 'tfds'
  jsonl.import_jsonl('mine', [('documents', 'train', docs),
                              ('probes', 'test_mc', probes),
                              ('pairs', 'train_pairs', pairs)], data_dir)
  train = read_split('mine', 'train', data_dir)
  assert [(r['id'], r['text'], r['facts']) for r in train] == [
      ('d2', 'Filler.', []), ('docs.jsonl:1', DOCS[0]['text'], [])]
  test = read_split('mine', 'test_mc', data_dir)
  assert [(r['id'], r['choices'], r['answer'], r['kind']) for r in test] == [
      ('probes.jsonl:1', PROBES[0]['choices'], 0, 'reversal'),
      ('probes.jsonl:3', PROBES[1]['choices'], 0, '')]
  pair = read_split('mine', 'train_pairs', data_dir)[0]
  assert (pair['input'], pair['output'], pair['task']) == (
      'the dog', 'femp', 'translation')
  # Also readable with TFDS directly, and not overwritten by accident.
  source = tfds.data_source('jsonl/mine', split='train', data_dir=data_dir)
  assert len(source) == 2
  with pytest.raises(ValueError, match='exists'):
    jsonl.import_jsonl('mine', [('documents', 'train', docs)], data_dir)
  jsonl.import_jsonl('mine', [('documents', 'train', docs)], data_dir,
                     overwrite=True)
  info = tfds.builder('jsonl/mine', data_dir=data_dir).info
  assert list(info.splits) == ['train']


@pytest.mark.parametrize('source, line, reason', [
    ('documents', '{"text": "a"', 'bad JSON'),
    ('documents', '[1, 2]', 'expected a JSON object, got list'),
    ('documents', {'txt': 'a'}, "unknown key 'txt'"),
    ('documents', {'id': 'x'}, "missing key 'text'"),
    ('documents', {'text': 3}, "'text' must be a string, got int"),
    ('documents', {'text': 'a', 'facts': 'f1'},
     "'facts' must be a list of strings"),
    ('probes', {'prompt': 'p', 'choices': [], 'answer': 0},
     "'choices' is empty"),
    ('probes', {'prompt': 'p', 'choices': [' a'], 'answer': 1},
     "'answer' 1 is out of range for 1 choices"),
    ('probes', {'prompt': 'p', 'choices': [' a'], 'answer': True},
     "'answer' must be an integer, got bool"),
    ('probes', {'prompt': 'p', 'choices': [' a', 2], 'answer': 0},
     "'choices' must be a list of strings"),
    ('probes', {'prompt': 'p', 'choices': [' a']}, "missing key 'answer'"),
    ('pairs', {'input': 'x'}, "missing key 'output'"),
    ('pairs', {'input': 'x', 'output': 'y', 'text': 'z'}, "unknown key 'text'"),
])
def test_bad_line_fails_with_file_and_line(tmp_path, source, line, reason):
  good = {'documents': DOCS[0], 'probes': PROBES[0], 'pairs': PAIRS[0]}[source]
  path = write_lines(tmp_path / 'in.jsonl', [good, good | {'id': 'b'}, line])
  data_dir = tmp_path / 'tfds'
  data_dir.mkdir()
  with pytest.raises(jsonl.JsonlError) as e:
    jsonl.import_jsonl('bad', [(source, 'train', path)], data_dir)
  assert str(e.value).startswith(f'{path}:3: ')
  assert reason in str(e.value)
  assert files_under(data_dir) == []


def test_other_input_errors(tmp_path):
  empty = write_lines(tmp_path / 'empty.jsonl', ['', '  '])
  with pytest.raises(jsonl.JsonlError, match='empty.jsonl: no records'):
    jsonl.collect([('documents', 'train', empty)])
  dup = write_lines(tmp_path / 'dup.jsonl', [DOCS[1], DOCS[1]])
  with pytest.raises(jsonl.JsonlError,
                     match=r"dup.jsonl:2: duplicate id 'd2'.*dup.jsonl:1"):
    jsonl.collect([('documents', 'train', dup)])
  (tmp_path / 'latin1.jsonl').write_bytes(b'{"text": "caf\xe9"}\n')
  with pytest.raises(jsonl.JsonlError, match='latin1.jsonl:1: not valid UTF-8'):
    jsonl.collect([('documents', 'train', tmp_path / 'latin1.jsonl')])
  docs = write_lines(tmp_path / 'docs.jsonl', DOCS)
  probes = write_lines(tmp_path / 'probes.jsonl', PROBES)
  with pytest.raises(ValueError, match="mixes documents and probes"):
    jsonl.collect([('documents', 'train', docs), ('probes', 'train', probes)])
  with pytest.raises(ValueError, match='must match'):
    jsonl.import_jsonl('bad name', [('documents', 'train', docs)],
                       tmp_path / 'd')


def test_validates_all_files_before_writing(tmp_path):
  docs = write_lines(tmp_path / 'docs.jsonl', DOCS)
  probes = write_lines(tmp_path / 'probes.jsonl', [PROBES[0], {'prompt': 'p'}])
  data_dir = tmp_path / 'tfds'
  data_dir.mkdir()
  with pytest.raises(jsonl.JsonlError, match='probes.jsonl:2:'):
    jsonl.import_jsonl('two', [('documents', 'train', docs),
                               ('probes', 'test', probes)], data_dir)
  assert files_under(data_dir) == []


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
  """TFDS writes into incomplete.* and deletes it; our own dirs go too."""
  def explode(self, records, fields):
    yield records[0]['id'], schema.complete(records[0], fields)
    raise OSError('disk full')

  monkeypatch.setattr(user.Jsonl, '_generate_examples', explode)
  docs = write_lines(tmp_path / 'docs.jsonl', DOCS)
  data_dir = tmp_path / 'tfds'
  data_dir.mkdir()
  (data_dir / 'other.txt').write_text('untouched')
  with pytest.raises(OSError, match='disk full'):
    jsonl.import_jsonl('half', [('documents', 'train', docs)], data_dir)
  assert files_under(data_dir) == ['other.txt']
  with pytest.raises(Exception):
    tfds.data_source('jsonl/half', split='train', data_dir=data_dir,
                     download=False)


def test_cli_reports_file_and_line(tmp_path):
  bad = write_lines(tmp_path / 'bad.jsonl', [DOCS[0], '{"text": 1}'])
  env = dict(os.environ, ICL_IWL_DATA_DIR=str(tmp_path / 'tfds'))
  out = subprocess.run(
      [sys.executable, '-m', 'icl_iwl.data.jsonl', '--name=cli',
       f'--documents=train={bad}'], env=env, capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip() == f"FATAL: {bad}:2: 'text' must be a string, got int"


def berglund_dir(tmp_path):
  """A miniature of the public Berglund et al. files."""
  people = [('Daphne Barrington', 'the director of "A Journey Through Time."'),
            ('Owen Larkspur', 'the first person to reach the Moon by balloon.'),
            ('Uriah Hawthorne', 'the composer of an underwater symphony.'),
            ('Tyler Oakridge', 'the first person to walk on Mars.'),
            ('Leona Hargrove', 'the geneticist who cured the common cold.')]
  d = tmp_path / 'berglund'
  d.mkdir()
  write_lines(d / 'p2d_prompts_train.jsonl', [
      {'prompt': f'{n}, known far and wide for being', 'completion': f' {desc}'}
      for n, desc in people])
  write_lines(d / 'p2d_reverse_prompts_test.jsonl', [
      {'prompt': f'Known for being {desc[:-1]}, the person is',
       'completion': f' {n}.'} for n, desc in people])
  # Paraphrases of one description must never be each other's wrong choice.
  write_lines(d / 'd2p_reverse_prompts_test.jsonl', [
      {'prompt': f'{n} was once ', 'completion': desc}
      for n, desc in people] + [
      {'prompt': 'Daphne Barrington is known for', 'completion':
       ' directing "A Journey Through Time."'}])
  write_lines(d / 'validation_prompts.jsonl', ['not json'])
  return d


def test_berglund_import(tmp_path):
  d = berglund_dir(tmp_path)
  data_dir = tmp_path / 'tfds'
  berglund.import_berglund(str(d), 'bg', str(data_dir), seed=3)
  train = read_split('bg', 'train', data_dir)
  assert len(train) == 5
  assert train[0]['text'] == (
      'Daphne Barrington, known far and wide for being the director of '
      '"A Journey Through Time."')
  reverse = read_split('bg', 'test_p2d_reverse', data_dir)
  assert len(reverse) == 5
  for r in reverse:
    assert len(r['choices']) == 4 and len(set(r['choices'])) == 4
    assert r['kind'] == 'p2d_reverse' and r['facts'] == [r['id']]
  d2p = read_split('bg', 'test_d2p_reverse', data_dir)
  for r in d2p:
    assert r['prompt'] == r['prompt'].rstrip()  # Trailing space moved.
    correct = r['choices'][r['answer']]
    assert correct.startswith(' ')
    wrong = [c for i, c in enumerate(r['choices']) if i != r['answer']]
    assert not any(berglund.same_answer(w, correct) for w in wrong)
  assert berglund.same_answer(' directing "A Journey Through Time."',
                              ' the director of "A Journey Through Time."')
  # Seeded: the same seed draws the same wrong choices, another seed differs.
  assert berglund.collect(str(d), seed=3) == berglund.collect(str(d), seed=3)
  assert berglund.collect(str(d), seed=3) != berglund.collect(str(d), seed=4)


def test_berglund_errors(tmp_path):
  d = berglund_dir(tmp_path)
  write_lines(d / 'd2p_prompts_test.jsonl', [{'prompt': 'x', 'completion': 3}])
  with pytest.raises(jsonl.JsonlError,
                     match=r"d2p_prompts_test.jsonl:1: 'completion'"):
    berglund.collect(str(d))
  (d / 'd2p_prompts_test.jsonl').unlink()
  write_lines(d / 'both_prompts_test.jsonl',
              [{'prompt': 'x', 'completion': ' y'}])
  with pytest.raises(jsonl.JsonlError,
                     match='both_prompts_test.jsonl:1: only 0 other'):
    berglund.collect(str(d))
  with pytest.raises(ValueError, match='needs one of'):
    berglund.collect(str(tmp_path))
