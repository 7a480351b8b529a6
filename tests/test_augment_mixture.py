"""Augmented fine-tuning's training mixture, and the configs that ask for it."""

import collections
import pathlib

import pytest

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl.augment import mixture
from icl_iwl.data import datasets
from icl_iwl.data import schema
from icl_iwl.data.builders import user

_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('ICL_IWL_DATA_DIR', str(tmp_path))
  return tmp_path


def _write(name: str, n: int, data_dir) -> None:
  user.write(name, {'train': [{'id': f'{name}-{i}', 'text': f'{name} says {i}.',
                               'facts': []} for i in range(n)]},
             [schema.DOCUMENT], data_dir)


def _finetune(arg: str = 'reversals,tiny,augmented') -> config_lib.ConfigDict:
  return config_lib.load_file(f'{_CONFIGS / "finetune.py"}:{arg}')


def test_parse():
  assert mixture.parse('original, jsonl/a:0.5,jsonl/b:2') == [
      ('original', 1.0), ('jsonl/a', 0.5), ('jsonl/b', 2.0)]
  for spec, message in [('original:x', 'not a number'),
                        ('original:-1', '>= 0'), ('original:nan', '>= 0'),
                        ('original,original:2', 'named twice'),
                        ('original:0,jsonl/a:0', 'no source a weight')]:
    with pytest.raises(errors.UserError, match=message):
      mixture.parse(spec)


def test_without_a_mixture_the_records_are_the_split(data_dir):
  data = _finetune('reversals,tiny').data
  assert data.sources == ''
  assert mixture.training_records(data) == datasets.resolve(
      'reversals', 'small', data_dir).records('train')


def test_weights_repeat_each_source(data_dir):
  _write('aug', 10, data_dir)
  data = _finetune().data
  original = datasets.resolve('reversals', 'small').records('train')
  data.sources = 'original:1,jsonl/aug:2.5'
  records = mixture.training_records(data)
  sources = collections.Counter(r['id'].split('#')[0] for r in records)
  assert sources == {'original': len(original), 'jsonl/aug': 25}
  assert len({r['id'] for r in records}) == len(records)
  texts = collections.Counter(r['text'] for r in records)
  repeats = sorted(v for t, v in texts.items() if 'aug says' in t)
  assert repeats == [2] * 5 + [3] * 5
  assert records == mixture.training_records(data)  # Seeded.
  data.sources = 'original:0.5,jsonl/aug:0'
  half = mixture.training_records(data)
  assert len(half) == len(original) // 2
  assert {r['text'] for r in half} < {r['text'] for r in original}
  data.seed = 1
  assert mixture.training_records(data) != half


def test_finetune_augmented_mixes_the_augmented_dataset_and_scores_the_original(
    data_dir):
  config = _finetune()
  assert config.data.sources == 'original:1,jsonl/augment_reversals_small_tiny:1'
  with pytest.raises(config_lib.ConfigError,
                     match=r'config.data.sources = .*no jsonl/augment_reversals'
                           r'_small_tiny .*configs/augment.py:reversals '):
    config_lib.validate(config, num_devices=8)
  _write('augment_reversals_small_tiny', 3, data_dir)
  config_lib.validate(config, num_devices=8)
  assert config_lib.eval_dataset(config) == ('reversals', 'small')
  assert len(mixture.training_records(config.data)) == 16 + 3
  augment = config_lib.load_file(f'{_CONFIGS / "augment.py"}:reversals,tiny')
  assert augment.augment.output == 'augment_reversals_small_tiny'


_AUGMENT_WORDS = [f'{d}{w}' for d in ('reversals', 'syllogisms',
                                       'reversal_curse', 'semantic')
                  for w in ('', ',local', ',global', ',split', ',tiny',
                            ',local,global,split,tiny')]


def test_every_augment_config_word_loads_and_validates():
  for arg in _AUGMENT_WORDS:
    config = config_lib.load_file(f'{_CONFIGS / "augment.py"}:{arg}')
    config_lib.validate(config, num_devices=8)
  local = config_lib.load_file(f'{_CONFIGS / "augment.py"}:semantic,local')
  assert (local.augment.passes, local.augment.output) == (
      'rephrase,reverse,infer', 'augment_semantic_local')


@pytest.mark.parametrize('fields, message', [
    ({'augment.passes': 'rephrase,revrse'},
     r"config.augment.passes: Unknown augmentation pass 'revrse'. Did you mean "
     r"'reverse'"),
    ({'augment.passes': ' , '}, 'augment.passes names no pass'),
    ({'augment.templates.reverse': 'Reverse it:'},
     r'config.augment.templates.reverse needs \{text\} exactly once'),
    ({'augment.templates.global': '{text} {documents}'},
     r'needs \{documents\} once, before \{text\}'),
    ({'augment.unit': 'paragraph'}, "augment.unit 'paragraph'"),
    ({'augment.sentence_split': 'overlapping'},
     "augment.sentence_split 'overlapping'"),
    ({'augment.samples': 4}, r'augment.samples = 4: several samples need'),
    ({'augment.batch_size': 0}, r'augment.batch_size = 0: must be > 0'),
    ({'augment.output': 'my-data'}, r'augment.output .* \[A-Za-z0-9_\]'),
    ({'augment.split': 'tain'}, r"split of reversals/full .*'tain'"),
    ({'augment.dataset': 'ictrain'}, r'ictrain/full has no documents'),
])
def test_bad_augment_fields_are_named(fields, message):
  config = config_lib.load_file(f'{_CONFIGS / "augment.py"}:reversals')
  config.update_from_flattened_dict(fields)
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config)
