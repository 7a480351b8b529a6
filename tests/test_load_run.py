"""'run:WORKDIR' checkpoints: a training run's weights, LoRA merged, for eval.

A real run is slow; instead a train state of the tiny preset is built with
train/state.py, moved away from its init ("trained"), and saved with the
run's Checkpointer beside the config.json icl_iwl.main would write.
"""

import json
import pathlib
import shutil

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_iwl import config_lib
from icl_iwl.checkpoints import load
from icl_iwl.checkpoints import manager
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.data import tokenizer
from icl_iwl.model import build
from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import lora
from icl_iwl.model import presets
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib
from icl_iwl.train import metrics as metrics_lib
from icl_iwl.train import optim
from icl_iwl.train import state as state_lib

_CONFIG = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'finetune.py'
_ACCURACY = {1: 0.2, 2: 0.9, 3: 0.5}  # The eval metric saved with each step.
_METRIC = 'eval/test_reversal/acc_sum'


def _write_run(workdir: pathlib.Path, *words: str, best_metric: str = _METRIC,
               best_mode: str = 'max', preset: str = '') -> tuple[dict, dict]:
  """Saves steps 1-3 of a tiny run (of `preset` instead of 'tiny' if given);
  returns (run config, {step: full params})."""
  config = config_lib.load_file(f'{_CONFIG}:' + ','.join(['reversals', 'tiny', *words]))
  config.model.preset = preset or config.model.preset
  config.checkpoint.update(best_metric=best_metric, best_mode=best_mode, keep=3)
  workdir.mkdir()
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')
  model = build.model(config.model)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  rules = rules_lib.fit(config.rules, model.config, mesh)
  trainable = lora.trainable(model.lora)
  state = state_lib.create(model, optim.optimizer(config.train), trainable, None,
                           mesh, rules, config.seed)
  ckpt = manager.Checkpointer(workdir / 'checkpoints', keep=3,
                              best_metric=best_metric, best_mode=best_mode,
                              async_save=False)
  writer = metrics_lib.MetricsWriter(workdir)
  saved = {}
  for step, acc in _ACCURACY.items():
    # A stand-in for training: every trained param moves (LoRA's B leaves 0).
    leaves, tree = jax.tree.flatten(state.params)
    rng = np.random.default_rng(step)  # On the host: no program per leaf shape.
    moved = [jax.device_put(np.asarray(x) + 0.05 * rng.standard_normal(x.shape, np.float32),
                            x.sharding) for x in leaves]
    state = state.replace(step=jnp.int32(step), params=jax.tree.unflatten(tree, moved))
    writer.write(step, {_METRIC: acc})
    ckpt.save(step, state, {'next': step}, {_METRIC: acc} if best_metric else None)
    saved[step] = jax.tree.map(np.asarray, state_lib.merge(state.params, state.frozen))
  ckpt.close()
  writer.close()
  return config, saved


def _logits(model: gemma.Transformer, params) -> np.ndarray:
  tokens = np.random.default_rng(0).integers(0, 1000, (2, 40))  # Past the window.
  logits, _ = jax.jit(model.apply)(
      {'params': params}, jnp.asarray(tokens), jnp.broadcast_to(jnp.arange(40), (2, 40)),
      cache.causal_mask(jnp.ones((2, 40), jnp.int32)))
  return np.asarray(logits)


def _load(workdir, which: str = '', preset: str = 'tiny'):
  return load.load(config_lib.model(preset, f'run:{workdir}{which}'))


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('full') / 'run'
  return (workdir, *_write_run(workdir))


def test_full_fine_tuning_run_loads_its_trained_weights(full_run):
  workdir, _, saved = full_run
  # The run is still training: step 4 is being saved. Loading leaves it alone.
  in_flight = workdir / 'checkpoints' / '4.orbax-checkpoint-tmp-1796195361'
  in_flight.mkdir()
  model, params, tok = _load(workdir)
  assert in_flight.is_dir()
  in_flight.rmdir()
  assert model.lora is None and tok is tokenizer.load_default()  # Base 'random'.
  reference = gemma.Transformer(presets.get('tiny'))
  np.testing.assert_array_equal(_logits(model, params), _logits(reference, saved[3]))
  for which, step in [('@last', 3), ('@best', 2), ('@1', 1)]:
    _, params, _ = _load(workdir, which)
    flat = traverse_util.flatten_dict(params, sep='/')
    for key, value in traverse_util.flatten_dict(saved[step], sep='/').items():
      np.testing.assert_array_equal(flat[key], value, err_msg=f'{which} {key}')


def test_lora_run_loads_merged_weights_with_the_lora_models_logits(tmp_path):
  config, saved = _write_run(tmp_path / 'run', 'lora')
  model, params, _ = _load(tmp_path / 'run')
  assert model.lora is None
  assert not [k for k in traverse_util.flatten_dict(params, sep='/') if '_lora_' in k]
  lora_model = build.model(config.model)  # As trained: the adapters beside W.
  assert lora_model.lora is not None
  expected = _logits(lora_model, saved[3])
  got = _logits(model, params)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
  # The adapters matter: the base weights alone give other logits.
  base = {k: v for k, v in traverse_util.flatten_dict(saved[3], sep='/').items()
          if '_lora_' not in k}
  without = _logits(model, traverse_util.unflatten_dict(base, sep='/'))
  assert np.abs(without - expected).max() > 1e-2


def test_best_follows_the_runs_metric_mode(tmp_path):
  _, saved = _write_run(tmp_path / 'run', best_mode='min')
  _, params, _ = _load(tmp_path / 'run', '@best')
  np.testing.assert_array_equal(params['final_norm']['scale'],
                                saved[1]['final_norm']['scale'])
  shutil.rmtree(tmp_path / 'run' / 'checkpoints' / '1')
  with pytest.raises(CheckpointError, match=r'was at step 1, whose checkpoint is '
                     r'gone \(kept: \[2, 3\]\)'):
    _load(tmp_path / 'run', '@best')


def test_bad_run_specs_fail_clearly(full_run, tmp_path):
  workdir = full_run[0]
  with pytest.raises(CheckpointError, match='no such directory'):
    _load(tmp_path / 'absent')
  with pytest.raises(CheckpointError, match='no config.json'):
    _load(tmp_path)
  with pytest.raises(CheckpointError, match=r'no checkpoint at step 7; it has steps \[1, 2, 3\]'):
    _load(workdir, '@7')
  with pytest.raises(CheckpointError, match='use @best, @last or @STEP'):
    _load(workdir, '@first')
  with pytest.raises(CheckpointError, match=r"Unknown checkpoint 'runs:/x'; use .*run:WORKDIR"):
    load.load(config_lib.model('tiny', 'runs:/x'))
  with pytest.raises(CheckpointError) as error:  # The run is 'tiny'.
    _load(workdir, preset='gemma3_270m')
  assert "is not a 'gemma3_270m' model" in str(error.value)
  assert 'embed_dim: 64 in the checkpoint, 640 in the preset' in str(error.value)

  started = tmp_path / 'started'  # Config written, no checkpoint yet.
  started.mkdir()
  (started / 'config.json').write_text((workdir / 'config.json').read_text())
  with pytest.raises(CheckpointError, match='no checkpoint'):
    _load(started)
  (started / 'checkpoints').mkdir()
  with pytest.raises(CheckpointError, match='no checkpoint'):
    _load(started)

  no_best = tmp_path / 'no_best'
  _write_run(no_best, best_metric='')
  with pytest.raises(CheckpointError, match='kept no best checkpoint'):
    _load(no_best, '@best')
  config = json.loads((no_best / 'config.json').read_text())
  assert config['checkpoint']['best_metric'] == ''
