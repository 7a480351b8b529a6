"""Orbax checkpointing policy and atomic cache writes (no training needed)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_iwl import paths
from icl_iwl.checkpoints import manager
from icl_iwl.checkpoints.params import CheckpointError


def _state(value: float):
  return {'step': jnp.int32(0), 'params': {'w': jnp.full((4, 3), value)}}


@pytest.mark.parametrize('mode, best', [('max', 2), ('min', 1)])
def test_keeps_the_last_n_and_the_best(tmp_path, mode, best):
  ckpt = manager.Checkpointer(tmp_path, keep=2, best_metric='acc', best_mode=mode,
                              async_save=False)
  accuracy = {1: 0.1, 2: 0.9, 3: 0.3, 4: 0.2, 5: 0.4}
  for step, acc in accuracy.items():
    ckpt.save(step, _state(step), {'next': step}, {'acc': acc})
  ckpt.save(6, _state(6), {'next': 6})  # No eval this time.
  assert sorted(ckpt.all_steps()) == sorted({best, 5, 6})
  state, data = ckpt.restore(_state(0))
  assert data == {'next': 6}
  np.testing.assert_array_equal(state['params']['w'], np.full((4, 3), 6.0))
  ckpt.close()
  # A resumed run (a new manager over the same directory) keeps the best too.
  ckpt = manager.Checkpointer(tmp_path, keep=2, best_metric='acc', best_mode=mode,
                              async_save=False)
  ckpt.save(7, _state(7), {'next': 7}, {'acc': 0.5})
  ckpt.save(8, _state(8), {'next': 8})
  assert sorted(ckpt.all_steps()) == sorted({best, 7, 8})
  ckpt.close()


def test_restore_into_other_shapes_names_them(tmp_path):
  ckpt = manager.Checkpointer(tmp_path, async_save=False)
  ckpt.save(1, _state(1), {})
  wrong = {'step': jnp.int32(0), 'params': {'w': jnp.zeros((4, 5))}}
  with pytest.raises(CheckpointError, match=r'params/w has shape \(4, 3\) in the '
                     r'checkpoint, the config expects \(4, 5\)'):
    ckpt.restore(wrong)
  with pytest.raises(KeyError, match="best_metric 'acc' is not among"):
    manager.Checkpointer(tmp_path / 'b', best_metric='acc').save(1, _state(1), {}, {'x': 1})


def test_a_save_on_8_devices_compiles_nothing_and_restores_equal(tmp_path, caplog):
  """Orbax's replica-parallel save would slice each replicated array on device
  (one compiled program per array shape and replica): CPU writes it whole."""
  mesh = jax.make_mesh((8,), ('data',))
  replicated = jax.NamedSharding(mesh, jax.P())
  split = jax.NamedSharding(mesh, jax.P('data'))
  w = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
  state = {'step': jax.device_put(np.int32(3), replicated),
           'params': {'w': jax.device_put(w, replicated),
                      'v': jax.device_put(-w, split)}}
  ckpt = manager.Checkpointer(tmp_path, async_save=False)
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    ckpt.save(1, state, {'next': 1})
  assert not [r.getMessage() for r in caplog.records if 'Compiling' in r.getMessage()]
  target = jax.tree.map(jnp.zeros_like, state)
  restored, data = ckpt.restore(target)
  assert data == {'next': 1}
  np.testing.assert_array_equal(restored['params']['w'], w)
  np.testing.assert_array_equal(restored['params']['v'], -w)
  assert restored['params']['v'].sharding == split
  ckpt.close()


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
  target = tmp_path / 'cache.bin'
  target.write_bytes(b'old')
  with pytest.raises(RuntimeError):
    with paths.atomic_path(target) as tmp:
      tmp.write_bytes(b'half-writ')
      raise RuntimeError('killed')
  assert target.read_bytes() == b'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['cache.bin']
  with paths.atomic_path(target) as tmp:
    tmp.write_bytes(b'new')
  assert target.read_bytes() == b'new'
