"""Nothing lost, bad input refused early: datasets, configs, workdirs, runs.

Each test reproduces one way a run could lose data or hours, and checks that
the data is intact, the run completes, or one clear error comes before any
model loads.
"""

import json
import logging as std_logging
import os
import pathlib
import signal
import stat
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl import paths
from icl_iwl import workdir as workdir_lib
from icl_iwl.checkpoints import manager
from icl_iwl.data import berglund
from icl_iwl.data import builders
from icl_iwl.data import datasets
from icl_iwl.data import jsonl
from icl_iwl.data import schema
from icl_iwl.data.builders import base
from icl_iwl.data.builders import reversals
from icl_iwl.train import metrics

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CONFIGS = _ROOT / 'configs'
_VERSION = str(reversals.Reversals.VERSION)


@pytest.fixture(autouse=True)
def _quiet():
  tfds.disable_progress_bar()


def _records(data_dir, split='train') -> list[dict]:
  return datasets.resolve('reversals', 'small', data_dir).records(split)


def _write(path: pathlib.Path, lines: list) -> pathlib.Path:
  path.write_text(''.join((x if isinstance(x, str) else json.dumps(x)) + '\n'
                          for x in lines))
  return path


# Datasets -------------------------------------------------------------------


def test_a_failed_rebuild_keeps_the_dataset(tmp_path, monkeypatch):
  before = _records(tmp_path)

  def explode(self, records, fields):
    yield records[0]['id'], schema.complete(records[0], fields)
    raise OSError('disk full')

  monkeypatch.setattr(reversals.Reversals, '_generate_examples', explode)
  with pytest.raises(OSError, match='disk full'):
    base.prepare(builders.builder('reversals', 'small', tmp_path), overwrite=True)
  monkeypatch.undo()
  assert _records(tmp_path) == before
  home = tmp_path / 'reversals' / 'small'
  assert sorted(p.name for p in home.iterdir()) == ['.lock', _VERSION]


_SLOW_REBUILD = '''
import sys, time
from icl_iwl.data import builders
from icl_iwl.data.builders import base, reversals
original = reversals.Reversals._generate_examples
def slow(self, records, fields):
  for i, example in enumerate(original(self, records, fields)):
    if i == 3:
      print('writing', file=sys.__stdout__, flush=True)
      time.sleep(600)
    yield example
reversals.Reversals._generate_examples = slow
base.prepare(builders.builder('reversals', 'small', sys.argv[1]), overwrite=True)
'''


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_rebuild_keeps_the_dataset_and_its_leftovers_go(tmp_path, sig):
  before = _records(tmp_path)
  home = tmp_path / 'reversals' / 'small'
  (home / f'incomplete.ABC123_{_VERSION}').mkdir()  # What an old killed build left.
  proc = subprocess.Popen([sys.executable, '-c', _SLOW_REBUILD, str(tmp_path)],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'writing'
  assert any(p.name.startswith('.staging-') for p in home.iterdir())
  proc.send_signal(sig)
  proc.wait(timeout=60)
  assert _records(tmp_path) == before  # The read also cleans up.
  base.prepare(builders.builder('reversals', 'small', tmp_path))  # Cleans up.
  assert sorted(p.name for p in home.iterdir()) == ['.lock', _VERSION]


def test_a_swap_cut_in_half_is_rolled_back(tmp_path):
  before = _records(tmp_path)
  final = tmp_path / 'reversals' / 'small' / _VERSION
  final.rename(final.with_name(f'{_VERSION}.old'))  # Killed between the renames.
  assert _records(tmp_path) == before
  assert not final.with_name(f'{_VERSION}.old').exists()


def test_what_tfds_would_reject_is_refused_before_writing(tmp_path):
  docs = _write(tmp_path / 'docs.jsonl', [{'text': 'a'}, {'text': 'b'}])
  with pytest.raises(errors.UserError, match='given twice for split'):
    jsonl.import_jsonl('twice', [('documents', 'train', docs),
                                 ('documents', 'train', docs)], tmp_path / 'd')
  surrogate = _write(tmp_path / 's.jsonl', ['{"text": "ok"}', '{"text": "bad \\ud800"}'])
  with pytest.raises(jsonl.JsonlError, match=r's.jsonl:2: .text. is not valid Unicode'):
    jsonl.import_jsonl('sur', [('documents', 'train', surrogate)], tmp_path / 'd')
  with pytest.raises(errors.UserError, match="duplicate id 'x'"):
    base.check_splits({'train': [{'id': 'x', 'text': 'a'}, {'id': 'x', 'text': 'b'}]})
  with pytest.raises(errors.UserError, match='not valid Unicode'):
    base.check_splits({'train': [{'id': 'x', 'facts': ['\udc80']}]})
  assert not (tmp_path / 'd').exists()


@pytest.mark.parametrize('line, reason', [
    ({'prompt': 'p', 'choices': [' a', ' '], 'answer': 0}, 'choice 1 is empty'),
    ({'prompt': 'p', 'choices': [' a', ' b', ' a'], 'answer': 0},
     "choice 2 repeats ' a'"),
])
def test_importer_refuses_empty_and_repeated_choices(tmp_path, line, reason):
  path = _write(tmp_path / 'p.jsonl', [{'prompt': 'q', 'choices': [' x', ' y'],
                                        'answer': 1}, line])
  with pytest.raises(jsonl.JsonlError, match=f'p.jsonl:2: {reason}'):
    jsonl.collect([('probes', 'test', path)])


def test_importer_input_problems_are_one_line(tmp_path):
  with pytest.raises(jsonl.JsonlError, match='missing.jsonl: no such file'):
    jsonl.collect([('documents', 'train', tmp_path / 'missing.jsonl')])
  with pytest.raises(jsonl.JsonlError, match='is a directory'):
    jsonl.collect([('documents', 'train', tmp_path)])
  docs = _write(tmp_path / 'docs.jsonl', [{'text': 'a'}])
  (tmp_path / 'file').write_text('x')
  with pytest.raises(errors.UserError, match='Cannot create the data dir'):
    jsonl.import_jsonl('x', [('documents', 'train', docs)], tmp_path / 'file' / 'd')
  env = dict(os.environ, ICL_IWL_DATA_DIR=str(tmp_path / 'tfds'))
  out = subprocess.run([sys.executable, '-m', 'icl_iwl.data.jsonl', '--name=x',
                        f'--documents=train={tmp_path / "nope.jsonl"}'],
                       env=env, capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip() == f'FATAL: {tmp_path / "nope.jsonl"}: no such file'


def test_berglund_answers_that_share_common_words_are_distinct(tmp_path):
  deeds = ['walk on Mars', 'reach the Moon by balloon', 'swim the Atlantic',
           'climb Everest backwards', 'cross the Sahara on foot']
  _write(tmp_path / 'p2d_prompts_train.jsonl', [
      {'prompt': f'Person {i} was', 'completion': f' the first person to {d}.'}
      for i, d in enumerate(deeds)])
  _write(tmp_path / 'd2p_reverse_prompts_test.jsonl', [
      {'prompt': f'Person {i} is known as', 'completion': f' the first person to {d}.'}
      for i, d in enumerate(deeds)])
  probes = berglund.collect(str(tmp_path))['test_d2p_reverse']
  assert all(len(set(p['choices'])) == 4 for p in probes)
  assert berglund.same_answer(' the first person to walk on Mars.',
                              ' the first person who walked on Mars.')


# Configs --------------------------------------------------------------------


def test_configs_import_without_jax():
  code = ('import sys\n'
          'from icl_iwl import config_lib\n'
          f'for f in {sorted(str(p) for p in _CONFIGS.glob("*.py"))!r}:\n'
          '  config_lib.load_file(f)\n'
          "print(sorted(m for m in ('jax', 'flax', 'tensorflow') if m in sys.modules))\n")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == '[]'


_WORDS = {
    'quickstart.py': ['', 'tiny'],
    'augment.py': [f'{d}{w}' for d in datasets.names() if d != 'ictrain'
                   for w in ('', ',local', ',global', ',split', ',tiny')],
    'lampinen.py': [f'{d}{w}' for d in datasets.names() if d != 'ictrain'
                    for w in ('', ',augmented', ',tiny', ',augmented,tiny',
                              ',augmented,local,global,split', ',augmented,global',
                              ',augmented,split')]
                   + ['semantic,small', 'semantic,small,augmented,global'],
    'experiment.py': [f'{d}{w}' for d in datasets.names() for w in ('', ',tiny', ',full')],
    'eval_icl.py': [f'{d}{t}' for d in datasets.names() for t in ('', ',tiny')],
    'ictrain.py': [f'{t},{s}' for t in ('translation', 'classification', 'all')
                   for s in ('none', 'random', 'similar', 'contrastive', 'mixture')]
                  + [f'translation,contrastive{w}' for w in
                     (',lora', ',scratch', ',tiny', ',lora,tiny', ',lora,scratch')],
    'ictrain_experiment.py': ['translation', 'classification,lora', 'translation,tiny',
                              'translation,lora,tiny', 'translation,steps=40,seeds=2'],
    'finetune.py': [f'{d}{w}' for d in datasets.names()
                    for w in ('', ',lora', ',bf16', ',tiny', ',lora,bf16,tiny')],
}


def test_every_config_file_loads_with_every_arg_word_and_validates():
  assert sorted(_WORDS) == sorted(p.name for p in _CONFIGS.glob('*.py'))
  for name, words in _WORDS.items():
    for arg in words:
      config = config_lib.load_file(f'{_CONFIGS / name}:{arg}' if arg else
                                    str(_CONFIGS / name))
      config_lib.validate(config, num_devices=8)


@pytest.mark.parametrize('arg, message', [
    ('reversals,tyny', r"Unknown word .*'tyny'. Did you mean 'tiny'\? Valid: augmented, bf16, "),
    ('semantik', r"'semantik'. Did you mean 'semantic'"),
    ('reversals,lora=maybe', r"lora='maybe' is not a bool"),
    ('reversals,steps=3', r"Unknown field .*'steps'"),
])
def test_config_arg_typos_are_errors(arg, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.load_file(f'{_CONFIGS / "finetune.py"}:{arg}')


def _finetune(**fields) -> config_lib.ConfigDict:
  config = config_lib.load_file(f'{_CONFIGS / "finetune.py"}:reversals,tiny')
  config.update_from_flattened_dict(fields)
  return config


@pytest.mark.parametrize('fields, message', [
    ({'data.dataset': 'reversal'}, r"Unknown dataset 'reversal'. Did you mean 'reversals'"),
    ({'data.split': 'tain'}, r"Unknown split of reversals/small .*'tain'. Did you mean 'train'"),
    ({'eval.splits': 'test_forward,test_revresal'}, r"'test_revresal'. Did you mean 'test_reversal'"),
    ({'model.preset': 'gemma3_207m'}, r"config.model.preset 'gemma3_207m'. Did you mean 'gemma3_270m'"),
    ({'model.dtype': 'bf16'}, r"config.model.dtype 'bf16'.*Valid: bfloat16, float32"),
    ({'model.checkpoint': 'gguf:/nowhere.gguf'}, r'no GGUF file /nowhere.gguf'),
    ({'model.checkpoint': 'hugging:x'}, r"config.model.checkpoint 'hugging:x'"),
    ({'train.steps': 0}, r'config.train.steps = 0: must be > 0'),
    ({'train.accum': 3}, r'config.train.batch_size = 8: must divide into train.accum = 3'),
    ({'data.sampler': 'similar_ish'}, r"config.data.sampler 'similar_ish'"),
    ({'mesh': (('data', 3), ('fsdp', 1), ('tensor', 1))},
     r'config.mesh \(data=3, fsdp=1, tensor=1\) does not divide the 8 available devices'),
    ({'mesh': (('data', 2), ('fsdp', 2), ('tensor', 1))}, r'uses 4 devices but 8'),
    ({'train.batch_size': 4, 'train.accum': 2}, r'over the 8 batch shards'),
])
def test_validate_names_the_field(fields, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(_finetune(**fields), num_devices=8)


@pytest.mark.parametrize('order, wrong', [(('icl', 'ft_s9'), 'ft_s9'),
                                          (('icl', 'icl'), 'icl'), ((), 'none named')])
def test_an_experiment_runs_stages_it_has_each_once(order, wrong):
  config = config_lib.load_file(f'{_CONFIGS / "lampinen.py"}:reversals,tiny')
  config.order = order
  with pytest.raises(config_lib.ConfigError,
                     match=rf'must name stages of this experiment, each once \({wrong}\): ft_s0, ft_s1, '):
    config_lib.validate(config, num_devices=8)
  config.order = ('lora_s1', 'icl')  # A subset, in any order.
  config_lib.validate(config, num_devices=8)


@pytest.mark.parametrize('words, passes, name', [
    ('', 'rephrase,reverse,infer', 'local'),
    (',split,local', 'rephrase,reverse,infer,sentences', 'local_split'),
    (',global', 'global', 'global'),
    (',split', 'sentences', 'split')])
def test_augmented_fine_tuning_trains_on_the_passes_its_words_name(words, passes, name):
  config = config_lib.load_file(f'{_CONFIGS / "lampinen.py"}:reversals,augmented{words}')
  assert config.stages.augment.augment.passes == passes
  assert config.stages.augment.augment.output == f'augment_reversals_{name}_medium'
  assert config.stages.aug_s2.data.sources == (
      f'original:1,jsonl/augment_reversals_{name}_medium:1')
  assert config.stages.aug_s2.label == f'augmented FT ({name.replace("_", ", ")})'


def test_the_pass_words_need_the_augmented_word():
  with pytest.raises(config_lib.ConfigError, match="add the word 'augmented'"):
    config_lib.load_file(f'{_CONFIGS / "lampinen.py"}:reversals,global')


def test_the_small_word_runs_the_small_config_where_it_has_a_step_count():
  small = config_lib.load_file(f'{_CONFIGS / "lampinen.py"}:semantic,small,augmented')
  medium = config_lib.load_file(f'{_CONFIGS / "lampinen.py"}:semantic')
  assert {config_lib.eval_dataset(s) for s in small.stages.values() if 'eval' in s
          } == {('semantic', 'small')}
  assert small.stages.ft_s1.data.config == small.stages.aug_s1.data.config == 'small'
  assert (small.stages.ft_s0.train.steps, medium.stages.ft_s0.train.steps) == (20, 120)
  assert small.stages.aug_s0.data.sources.endswith('augment_semantic_local_small:1')
  with pytest.raises(config_lib.ConfigError, match="no step count for reversals's small"):
    config_lib.load_file(f'{_CONFIGS / "lampinen.py"}:reversals,small')


def _main(*args: str, cache: pathlib.Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, ICL_IWL_CACHE=str(cache),
             ICL_IWL_DATA_DIR=str(paths.data_dir()), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'icl_iwl.main', *args], env=env,
                        capture_output=True, text=True, cwd=_ROOT, timeout=600)


@pytest.mark.parametrize('args, message', [
    (['--config=configs/finetune.py:reversals,tyny'], "Did you mean 'tiny'"),
    (['--config=configs/finetune.py:reversals', '--config.train.steps=0'],
     'config.train.steps = 0: must be > 0'),
    (['--config=configs/eval_icl.py:reversals', '--config.eval.splits=test_x'],
     "Unknown probe split of reversals/full in config.eval.splits: 'test_x'"),
    (['--config=configs/finetune.py:reversals', "--config.mesh=(('data',3),)"],
     'does not divide the'),
])
def test_bad_input_is_one_line_before_any_model_loads(tmp_path, args, message):
  cache = tmp_path / 'cache'  # The real model would be assembled here.
  out = _main(*args, f'--workdir={tmp_path / "w"}', cache=cache)
  assert out.returncode == 2, out.stderr[-2000:]
  fatal = [line for line in out.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1 and message in fatal[0], out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  assert not list(cache.rglob('*.gguf')) and not list(cache.rglob('*.safetensors'))
  assert not (tmp_path / 'w' / 'config.json').exists()


def test_plan_refuses_a_misspelt_key_in_one_line():
  """icl_iwl.plan parses its flags as icl_iwl.main does (config_lib.parse_flags)."""
  out = subprocess.run(
      [sys.executable, '-m', 'icl_iwl.plan', '--config=configs/finetune.py:reversals',
       '--config.trian.steps=3'], env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, cwd=_ROOT, timeout=600)
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.startswith("FATAL: Unknown config key 'trian' in --config.trian.steps=3 "
                               "(under the config). Did you mean train?"), out.stderr[-2000:]
  assert 'Traceback' not in out.stderr


def test_the_commands_import_side_by_side():
  """Each command defines its flags only when run (a test or notebook may
  import several; icl_iwl.main's --config would clash with another's)."""
  # pylint: disable=g-import-not-at-top,unused-import
  from icl_iwl import main  # noqa: F401
  from icl_iwl import plan  # noqa: F401
  from icl_iwl import report  # noqa: F401


def test_a_workdir_belongs_to_one_run(tmp_path):
  old = _finetune()
  workdir_lib.claim(tmp_path, old)
  recorded = (tmp_path / 'config.json').read_text()
  workdir_lib.claim(tmp_path, _finetune(**{'train.steps': 12}))  # Same run, longer.
  for change, field in [({'data.dataset': 'semantic'}, 'data.dataset'),
                        ({'model.lora.rank': 4}, 'model.lora.rank')]:
    with pytest.raises(errors.UserError, match=f'holds another run .*{field}.*--allow_changed_config'):
      workdir_lib.claim(tmp_path, _finetune(**change))
    assert json.loads((tmp_path / 'config.json').read_text())['train']['steps'] == 12
  workdir_lib.claim(tmp_path, _finetune(**{'model.lora.rank': 4}), allow_changed=True)
  backups = list(tmp_path.glob('config.*.json'))
  assert len(backups) == 1 and json.loads(backups[0].read_text())['model']['lora']['rank'] == 0
  assert json.loads(recorded)['model']['lora']['rank'] == 0
  with pytest.raises(errors.UserError, match='--workdir is empty'):
    workdir_lib.claim('', old)
  with pytest.raises(errors.UserError, match='is a file'):
    workdir_lib.claim(backups[0], old)


def test_outputs_get_normal_permissions(tmp_path):
  mask = os.umask(0o022)
  try:
    with paths.atomic_path(tmp_path / 'done.json') as tmp:
      tmp.write_text('{}')
  finally:
    os.umask(mask)
  assert stat.S_IMODE((tmp_path / 'done.json').stat().st_mode) == 0o644


# Runs -----------------------------------------------------------------------


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {'w': jax.ShapeDtypeStruct((4,), jnp.float32, sharding=device)}
  ckpt = manager.Checkpointer(tmp_path, keep=3, async_save=False)
  for step in (1, 2, 3):
    ckpt.save(step, {'w': jnp.full((4,), float(step))}, {'step': step})
  ckpt.close()
  (tmp_path / '3' / 'data' / 'metadata').write_text('{"step"')  # Cut short.
  for f in (tmp_path / '2' / 'state').rglob('d/*'):  # Truncated arrays.
    f.write_bytes(f.read_bytes()[:10])
  ckpt = manager.Checkpointer(tmp_path, keep=3, async_save=False)
  state, data = ckpt.restore(abstract)
  assert data == {'step': 1} and float(state['w'][0]) == 1.0
  assert sorted(p.name for p in tmp_path.iterdir()) == ['1', '2.unreadable', '3.unreadable']
  assert 'Checkpoint' in caplog.text and '3' in caplog.text
  ckpt.save(2, {'w': jnp.full((4,), 2.0)}, {'step': 2})  # Training goes on.
  ckpt.close()
  (tmp_path / '1' / 'state' / '_METADATA').write_text('{')
  (tmp_path / '2' / 'state' / '_METADATA').write_text('{')
  with pytest.raises(manager.CheckpointError, match='No checkpoint .* restores'):
    manager.Checkpointer(tmp_path).restore(abstract)


def test_a_cut_metrics_line_does_not_block_resume(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text(
      '{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n{"step": 3, "tra')
  assert [m['step'] for m in metrics.read(tmp_path)] == [1, 2]
  writer = metrics.MetricsWriter(tmp_path, resume_step=1)
  writer.write(2, {'train/loss': 1.25})
  writer.close()
  assert [(m['step'], m['train/loss']) for m in metrics.read(tmp_path)] == [
      (1, 2.0), (2, 1.25)]


def test_every_finetune_config_fits_its_training_examples():
  from icl_iwl.data import pipeline  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import samplers  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import tokenizer  # pylint: disable=g-import-not-at-top
  tok = tokenizer.load_default()
  for arg in _WORDS['finetune.py']:
    config = config_lib.load_file(f'{_CONFIGS / "finetune.py"}:{arg}')
    d = config.data
    records = datasets.resolve(d.dataset, d.config).records(d.split)
    sampler = samplers.SAMPLERS.get(d.sampler)(records, d)
    pipeline.check_lengths(sampler, tok, config.train.seq_len)  # Raises if not.
  with pytest.raises(pipeline.TooLongError, match='raise train.seq_len to at least'):
    pipeline.check_lengths(sampler, tok, 8)


def test_a_long_example_loses_context_never_targets():
  from icl_iwl.data import context  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import pipeline  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import tokenizer  # pylint: disable=g-import-not-at-top
  tok = tokenizer.load_default()
  units = ('Input: one two\nOutput: three\n', 'Input: four five\nOutput: six\n')
  example = context.Example(context=units, prompt='Input: seven\nOutput:',
                            target=' eight nine\n')
  whole = context.fit(example, tok, 100)
  n_target, n_first = len(tok.encode(example.target)), len(tok.encode(units[0]))
  cut = context.fit(example, tok, len(whole.tokens) - 1)
  assert cut.kept == (1,)  # The oldest context example goes, whole.
  assert cut.tokens[0] == tok.bos_id  # BOS stays.
  assert list(cut.tokens[1:]) == list(whole.tokens[1 + n_first:])
  assert cut.loss_mask.sum() == whole.loss_mask.sum() == n_target
  with pytest.raises(pipeline.TooLongError, match='loss targets'):
    context.fit(context.Example(target='one two three four five'), tok, 4)


def test_library_info_lines_are_dropped_unless_warnings():
  from icl_iwl import main  # pylint: disable=g-import-not-at-top

  def kept(level: int, path: str) -> bool:
    return main._quiet_libraries(std_logging.LogRecord('absl', level, path, 1, 'm', (), None))

  orbax = os.path.join(os.sep, 'venv', 'site-packages', 'orbax', 'checkpoint', 'x.py')
  tfds_file = os.path.join(os.sep, 'venv', 'site-packages', 'tensorflow_datasets', 'x.py')
  assert not kept(std_logging.INFO, orbax) and not kept(std_logging.INFO, tfds_file)
  assert kept(std_logging.WARNING, orbax)
  assert kept(std_logging.INFO, os.path.join(os.sep, 'repo', 'icl_iwl', 'train', 'loop.py'))
