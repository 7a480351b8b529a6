"""Orbax checkpoints of a training run: train state plus data-iterator state.

Saves are asynchronous (unless `async_save` is False: the training loop's
choice in a process with hostmem's malloc settings) and atomic (orbax writes
to a temporary directory and renames it when complete), so a killed run never
leaves a checkpoint that loads half-written; one damaged later (a full disk, a
partial copy) is set aside on restore and the one before it is used. Kept: the
last `keep` checkpoints and, if `best_metric` is set, the best one by that
eval metric.
"""

import functools
import pathlib
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.model import presets
from icl_iwl.model import scan


@functools.cache  # A process-wide registration: once is enough.
def _write_replicated_arrays_whole_on_cpu() -> None:
  """On CPU, replica 0 writes each replicated array whole.

  Orbax's default splits a replicated array among its replicas, each slicing
  its part on device: on TPU/GPU that spreads the copy to the host, but CPU
  devices share the host's memory, so it only compiles one slice program per
  array shape and part (with 8 devices, ~8 s per save of the tiny model).
  The files are the same either way.
  """
  if jax.default_backend() == 'cpu':
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
        override=True)


class Checkpointer:
  """Saves and restores (state, data state) under `directory`."""

  def __init__(self, directory: str | pathlib.Path, keep: int = 2,
               best_metric: str = '', best_mode: str = 'max',
               async_save: bool = True):
    if best_mode not in ('max', 'min'):
      raise ValueError(f"best_mode must be 'max' or 'min', not {best_mode!r}.")
    policies = [checkpoint_managers.LatestN(keep)]
    if best_metric:  # BestN sorts ascending and keeps the top (tested).
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric],
          reverse=best_mode == 'min', n=1, keep_checkpoints_without_metrics=False))
    self.best_metric = best_metric
    _write_replicated_arrays_whole_on_cpu()
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            # Metrics on disk, so the best checkpoint survives a resume.
            best_fn=(lambda m: m[best_metric]) if best_metric else None,
            best_mode=best_mode,
            cleanup_tmp_directories=True),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict,
           metrics: dict[str, float] | None = None) -> None:
    """Starts saving (returns once arrays are copied off the devices)."""
    if self.best_metric and metrics is not None and self.best_metric not in metrics:
      raise KeyError(f'best_metric {self.best_metric!r} is not among the eval '
                     f'metrics {sorted(metrics)}.')
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state)), metrics=metrics, force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def restore(self, abstract_state: Any, step: int | None = None,
              config: presets.GemmaConfig | None = None,
              ) -> tuple[Any, dict] | None:
    """(state, data state) of `step`, or of the newest checkpoint that
    restores; None if there is none.

    A checkpoint that does not restore (truncated, half-deleted) is renamed
    `<step>.unreadable` (kept for inspection, never deleted) with a warning
    naming it, and the one before it is tried.

    Args:
      abstract_state: ShapeDtypeStructs with shardings, the layout to load into.
      step: this checkpoint only (no fallback).
      config: the model's architecture: with it, a checkpoint saved with
        another layer layout (scanned or not, `model.scan_layers`, or the
        grouped scan of revisions before f6f0d8b) is converted.

    Raises:
      CheckpointError: if the saved shapes do not match `abstract_state` (a
        different model config), or if checkpoints exist but none restores.
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    for s in steps:
      try:
        saved = _by_name(self._manager.item_metadata(s)['state'])
      except Exception as e:  # pylint: disable=broad-except  # Any corruption.
        if not self._set_aside(s, e, fallback=step is None):
          raise
        continue
      other_layout = config is not None and (
          scan.layout_flat(saved) != scan.layout_flat(_by_name(abstract_state)))
      if not other_layout:
        self._check_shapes(s, saved, abstract_state)
      try:
        if other_layout:
          restored = self._restore_other_layout(s, abstract_state, config)
        else:
          restored = self._manager.restore(s, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              data=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except  # Any corruption.
        if not self._set_aside(s, e, fallback=step is None):
          raise
        continue
      logging.info('Restored step %d from %s', s, self.directory)
      return restored['state'], restored['data']
    if steps:
      raise CheckpointError(
          f'No checkpoint in {self.directory} restores (each was renamed '
          '<step>.unreadable). Move them away to start over.')
    return None

  def _restore_other_layout(self, step: int, abstract_state: Any,
                            config: presets.GemmaConfig) -> dict[str, Any]:
    """{'state', 'data'} of a checkpoint saved in the other layer layout:
    read on the host, converted by leaf name, placed as `abstract_state`."""
    target = _by_name(abstract_state)
    flat = scan.convert_flat(_by_name(self.load_numpy(step)), config,
                             scanned=scan.layout_flat(target) == 'scanned')
    self._check_shapes(step, flat, abstract_state)
    leaves = [jax.make_array_from_callback(
        want.shape, want.sharding, lambda index, a=flat[name]: a[index])
              for name, want in target.items()]
    state = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(abstract_state, is_leaf=lambda x: hasattr(x, 'shape')),
        leaves)
    data = self._manager.restore(step, args=ocp.args.Composite(
        data=ocp.args.JsonRestore()))['data']
    return {'state': state, 'data': data}

  def _set_aside(self, step: int, error: Exception, fallback: bool) -> bool:
    """Renames an unreadable checkpoint out of the manager's view."""
    if not fallback:
      return False
    bad = self.directory / str(step)
    aside = bad.with_name(f'{step}.unreadable')
    n = 1
    while aside.exists():  # The same step failed before.
      n += 1
      aside = bad.with_name(f'{step}.unreadable-{n}')
    logging.warning('Checkpoint %s does not restore (%s: %s); keeping it as %s '
                    'and trying the one before.', bad, type(error).__name__,
                    str(error)[:300], aside)
    if jax.process_index() == 0:
      bad.rename(aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set aside {bad}')
    self._manager.reload()
    return True

  def load_numpy(self, step: int | None = None) -> dict[str, Any]:
    """A checkpoint's state as host numpy arrays, whatever mesh or number of
    processes saved it (for inspection and export)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'{self.directory}: no checkpoint.')
    metadata = self._manager.item_metadata(step)['state']
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    return ocp.PyTreeCheckpointer().restore(
        self.directory / str(step) / 'state',
        args=ocp.args.PyTreeRestore(restore_args=restore_args))

  def _check_shapes(self, step: int, saved: dict[str, Any], abstract_state: Any) -> None:
    problems = []
    for name, want in _by_name(abstract_state).items():
      got = saved.get(name)
      if got is None:
        problems.append(f'{name} is missing')
      elif tuple(got.shape) != tuple(want.shape):
        problems.append(f'{name} has shape {tuple(got.shape)} in the checkpoint, '
                        f'the config expects {tuple(want.shape)}')
    if problems:
      raise CheckpointError(
          f'Checkpoint {self.directory / str(step)} does not match this run\'s '
          'model (a different preset or LoRA setting?):\n  ' + '\n  '.join(problems[:20]))

  def close(self) -> None:
    self._manager.close()


def _by_name(tree: Any) -> dict[str, Any]:
  """{'params/layer_0/attn/q_einsum/w': leaf} for dataclass or dict trees."""
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  def name(k):
    return str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
  return {'/'.join(name(k) for k in path): leaf for path, leaf in flat}
