"""End-to-end fine-tuning on the tiny preset: resume, devices, errors, LoRA."""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl.checkpoints import manager
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.model import gemma
from icl_iwl.model import presets
from icl_iwl.train import loop
from icl_iwl.train import metrics

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CONFIG = str(_ROOT / 'configs' / 'finetune.py')


def _config(*words: str, **train):
  config = config_lib.load_file(f'{_CONFIG}:reversals,tiny' + ''.join(f',{w}' for w in words))
  config.eval.every = 0
  config.checkpoint.async_save = False
  config.train.update(train)
  return config


def _main(workdir, *flags, devices: int = 8, wait: bool = True):
  """python -m icl_iwl.main with the tiny finetune config, on `devices` CPUs."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
      os.environ['XLA_FLAGS'] + f' --xla_force_host_platform_device_count={devices}'))
  cmd = [sys.executable, '-m', 'icl_iwl.main', f'--config={_CONFIG}:reversals,tiny',
         f'--workdir={workdir}', '--config.eval.every=0', *flags]
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=_ROOT)
  if not wait:
    return proc
  out, err = proc.communicate(timeout=900)
  return proc.returncode, out, err


def _final_state(workdir, step=None):
  ckpt = manager.Checkpointer(pathlib.Path(workdir) / 'checkpoints')
  step = ckpt.latest_step() if step is None else step
  state = ckpt.load_numpy(step)
  ckpt.close()
  return step, state


def _losses(workdir):
  return [m['train/loss'] for m in metrics.read(workdir) if 'train/loss' in m]


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """A 4-step run in-process on 8 devices, checkpointed every step, with
  scanned layers (the layout of the larger presets; the resume and
  multi-process runs below use it too, the one-device run the per-layer
  model, which starts from the same weights)."""
  workdir = tmp_path_factory.mktemp('straight')
  config = _config(steps=4, learning_rate=3e-3, warmup_steps=0)
  config.checkpoint.update(every=1, keep=10)
  config.model.scan_layers = True
  return workdir, loop.train(config, workdir)


_FLAGS = ('--config.train.steps=4', '--config.train.learning_rate=3e-3',
          '--config.train.warmup_steps=0', '--config.checkpoint.every=1',
          '--config.checkpoint.keep=10')
_SCANNED = (*_FLAGS, '--config.model.scan_layers=True')


def _wait_for(path: pathlib.Path, proc: subprocess.Popen) -> None:
  deadline = time.time() + 600
  while not path.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.1)


def test_loss_goes_down_and_one_device_equals_eight(straight, tmp_path):
  """One device, per-layer model == eight devices, scanned layers."""
  workdir, last = straight
  code, _, err = _main(tmp_path, *_FLAGS, devices=1)
  assert code == 0, err
  eight, one = _losses(workdir), _losses(tmp_path)
  assert len(eight) == 4 and eight[-1] < eight[0] - 0.05
  np.testing.assert_allclose(one, eight, rtol=2e-5)
  assert last['train/loss'] == eight[-1]


def test_preempted_then_killed_run_resumes_bit_exactly(straight, tmp_path):
  checkpoints = tmp_path / 'checkpoints'
  # SIGTERM (TPU preemption): checkpoint at the step boundary, exit 75 (not
  # done: no done.json, so sweeps rerun it).
  proc = _main(tmp_path, *_SCANNED, wait=False)
  _wait_for(checkpoints / '1', proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 75, err
  assert 'Preempted (SIGTERM): saved step' in err
  assert not (tmp_path / 'done.json').exists()
  preempted_at = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
  assert preempted_at < 4
  # SIGKILL after the next checkpoint: no chance to clean up.
  proc = _main(tmp_path, *_SCANNED, wait=False)
  _wait_for(checkpoints / str(preempted_at + 1), proc)
  proc.kill()
  proc.communicate()
  code, _, err = _main(tmp_path, *_SCANNED)
  assert code == 0, err
  assert (tmp_path / 'done.json').exists()
  step_a, a = _final_state(straight[0])
  step_b, b = _final_state(tmp_path)
  assert step_a == step_b == 4
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  assert _losses(straight[0]) == _losses(tmp_path)


def test_two_processes_train_like_one(straight, tmp_path):
  """jax.distributed over two local processes (2 CPU devices each), scanned
  layers."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  procs = [_main(tmp_path, *_SCANNED, f'--coordinator=127.0.0.1:{port}',
                 '--num_processes=2', f'--process_id={i}', devices=2, wait=False)
           for i in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
  np.testing.assert_allclose(_losses(tmp_path), _losses(straight[0]), rtol=2e-5)
  _, a = _final_state(straight[0])
  _, b = _final_state(tmp_path)
  # Adam divides by sqrt(v): where a gradient is ~0, summation order moves an
  # update by up to lr (3e-3) per step. Bound the drift well below that.
  for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    np.testing.assert_allclose(x, y, atol=2e-4, rtol=0)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = _config(steps=6, learning_rate=1e30, warmup_steps=0, schedule='constant',
                   grad_clip=1e30)
  config.checkpoint.every = 1
  with pytest.raises(FloatingPointError, match=r'at step (\d+).*last good checkpoint is step'):
    loop.train(config, tmp_path)
  step, state = _final_state(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))
  assert step >= 1


def test_lora_trains_only_the_adapters(tmp_path):
  config = _config('lora', steps=2, warmup_steps=0)
  loop.train(config, tmp_path)
  _, first = _final_state(tmp_path, 2)
  assert all('_lora_' in jax.tree_util.keystr(p)
             for p, _ in jax.tree_util.tree_flatten_with_path(first['params'])[0])
  assert first['frozen']['embedder']['input_embedding'].shape == (262144, 64)
  b = first['params']['layer_0']['attn']['q_einsum']['w_lora_b']
  assert np.abs(b).max() > 0  # The zero-initialized factor moved.
  # A full fine-tuning config cannot resume the LoRA run: a clear error.
  with pytest.raises(CheckpointError, match='does not match'):
    loop.train(_config(steps=3), tmp_path)


def test_wrong_config_key_and_bad_mesh_fail_clearly(tmp_path):
  code, _, err = _main(tmp_path, '--config.train.stpes=3')
  assert code == 2
  assert "Unknown config key 'stpes'" in err and 'Did you mean steps' in err
  config = _config()
  config.mesh = (('data', 3), ('fsdp', 1), ('tensor', 1))
  with pytest.raises(ValueError, match=r'data=3.*does not divide the 8 available cpu'):
    loop.train(config, tmp_path)


def test_model_flops_of_a_step():
  from icl_iwl.model import presets  # pylint: disable=g-import-not-at-top
  from icl_iwl.train import mfu  # pylint: disable=g-import-not-at-top
  config = presets.get('gemma3_270m')
  full = mfu.train_flops(config, 1, 128) / 128
  lora = mfu.train_flops(config, 1, 128, frozen_weights=True) / 128
  attention = 12 * 18 * 4 * 256 * 128  # 12 L H Dh T.
  # 6 x ~268M matmul weights (the tied output layer included, norms not).
  assert 6 * 265e6 < full - attention < 6 * 269e6
  assert (lora - attention) / (full - attention) == pytest.approx(4 / 6)
  # Gathering 16 of 128 positions before the output layer (262,144 x 640
  # weights) leaves it 6 x 16 x 262,144 x 640 FLOPs a row.
  gathered = mfu.train_flops(config, 2, 128, slots=16)
  assert 2 * 128 * full - gathered == pytest.approx(2 * 6 * (128 - 16) * 262144 * 640)


@pytest.mark.parametrize('max_norm', [0.5, 100.0])
def test_gradient_clipping_matches_optax(max_norm):
  import optax  # pylint: disable=g-import-not-at-top
  from icl_iwl.train import optim  # pylint: disable=g-import-not-at-top
  k = jax.random.split(jax.random.key(0), 2)
  grads = {'a': jax.random.normal(k[0], (3, 4)), 'b': {'c': jax.random.normal(k[1], (5,))}}
  ours, ours_state = optim.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
  ref, ref_state = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
  assert ours_state == ref_state  # Checkpoints of either restore into the other.
  for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(x, y, rtol=1e-6)
  assert float(optax.global_norm(ours)) == pytest.approx(min(max_norm, float(optax.global_norm(grads))), rel=1e-6)


def test_ictrain_with_embedding_similarity_trains(tmp_path, monkeypatch):
  """IC-Train on task pairs with contrastive contexts chosen by the model's
  own embeddings (computed once before training, cached on disk)."""
  monkeypatch.setenv('ICL_IWL_CACHE', str(tmp_path / 'cache'))
  config = config_lib.load_file(f'{_CONFIG}:ictrain,tiny')
  config.eval.every = 0
  config.checkpoint.async_save = False
  config.train.update(steps=2, warmup_steps=0, seq_len=256)
  config.data.update(sampler='contrastive', similarity='embedding')
  config_lib.validate(config, num_devices=8)
  last = loop.train(config, tmp_path / 'run')
  assert np.isfinite(last['train/loss'])
  assert 0 < last['train/target_tokens'] < 8 * 256 / 4  # Targets only.
  assert len(list((tmp_path / 'cache' / 'embeddings').glob('*.npy'))) == 1


@pytest.mark.unit
def test_a_run_the_disk_cannot_hold_is_refused_before_the_model_loads(tmp_path, monkeypatch):
  config = _config(steps=4)
  config.checkpoint.update(every=2, keep=2)  # Saves at steps 2 and 4.
  model = gemma.Transformer(presets.get(config.model.preset))
  params = sum(x.size for x in jax.tree.leaves(gemma.abstract_params(model)))
  checkpoint = 3 * 4 * params  # f32 params, AdamW's mu and nu (+ a few counters).
  free = {}
  monkeypatch.setattr(loop.shutil, 'disk_usage',
                      lambda path: shutil._ntuple_diskusage(0, 0, free['bytes']))  # pylint: disable=protected-access
  def no_load(config):
    raise AssertionError('the model was loaded')
  monkeypatch.setattr(loop.runtime, 'load_host', no_load)
  free['bytes'] = 2 * checkpoint - 1
  with pytest.raises(errors.UserError, match=r'GB free; this run writes 2 more checkpoint\(s\)'):
    loop.train(config, tmp_path)
  free['bytes'] = 2 * checkpoint + 1024
  loop.check_disk(config, tmp_path)
  loop.check_disk(config, tmp_path / 'not' / 'made' / 'yet')  # Its disk: tmp_path's.
  # Resuming after step 2 writes one more.
  (tmp_path / 'checkpoints' / '2').mkdir(parents=True)
  free['bytes'] = checkpoint - 1
  with pytest.raises(errors.UserError, match=r'writes 1 more checkpoint'):
    loop.check_disk(config, tmp_path)
  free['bytes'] = checkpoint + 1024
  loop.check_disk(config, tmp_path)


@pytest.mark.parametrize('tuned', [True, False])
def test_with_hostmem_settings_each_checkpoint_is_written_before_its_pages_go_back(
    tuned, tmp_path, monkeypatch):
  """With hostmem's malloc settings an asynchronous save's host copy of the
  state would stay mapped beside the next steps' temporaries: saves are
  synchronous, each trim after a save sees its step on disk. Without them,
  saves stay asynchronous (`checkpoint.async_save`)."""
  config = _config(steps=3, warmup_steps=0)
  config.checkpoint.update(every=1, keep=10, async_save=True)
  checkpoints = tmp_path / 'checkpoints'
  seen, made, original = [], [], manager.Checkpointer
  def trim():
    seen.append(sorted(int(p.name) for p in checkpoints.glob('*') if p.name.isdigit()))
  def checkpointer(*args):
    made.append(args[-1])
    return original(*args)
  monkeypatch.setattr(loop.hostmem, 'active', lambda: tuned)
  monkeypatch.setattr(loop.hostmem, 'trim', trim)
  monkeypatch.setattr(loop.manager, 'Checkpointer', checkpointer)
  loop.train(config, tmp_path)
  assert made == [not tuned]  # async_save
  if tuned:  # Setup's trim and the first step's come before its save.
    assert seen == [[], [], [1], [1, 2], [1, 2, 3]]


@pytest.mark.parametrize('resumed', [False, True])
def test_setup_pages_go_back_before_the_first_step(resumed, tmp_path, monkeypatch):
  """The pretrained load's or a restore's freed host copies are trimmed
  before the first step adds its temporaries (with hostmem's settings they
  would stay mapped beside them: a resumed 270M run peaked 13.9 GB, 9.3 GB
  with the trim, 9.8 GB run through)."""
  config = _config(steps=3, warmup_steps=0)
  config.checkpoint.every = 1
  if resumed:
    config.train.steps = 2
    loop.train(config, tmp_path)
    config.train.steps = 3
  events, run = [], loop.runtime.Trainer.run
  def step(self, *args):
    events.append('step')
    return run(self, *args)
  monkeypatch.setattr(loop.runtime.Trainer, 'run', step)
  monkeypatch.setattr(loop.hostmem, 'trim', lambda: events.append('trim'))
  loop.train(config, tmp_path)
  steps = 1 if resumed else 3
  assert events[:3] == ['trim', 'step', 'trim']
  assert events.count('step') == steps
