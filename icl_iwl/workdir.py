"""A workdir belongs to one run: its config.json says which.

    workdir.claim(path, config)   # before a job starts (icl_iwl.main)

A rerun with the same workdir resumes (training) or redoes (evaluation) the
run that config.json describes. A config that changes what the outputs mean
(the job, the model and its LoRA, the training data and batch shape, the
probe dataset) is refused before anything runs, unless the user asks for it
(`allow_changed`): the old config.json is then kept as config.<time>.json.
Other fields (steps, eval and checkpoint frequency, mesh, scorer shapes) may
change between runs. config.json is written only once every check passed.
"""

import json
import pathlib
import time
from typing import Any

import ml_collections

from icl_iwl import errors
from icl_iwl import paths

CONFIG = 'config.json'
# Dotted prefixes of the fields that say what a workdir's outputs mean.
IDENTITY = ('job', 'model.preset', 'model.checkpoint', 'model.param_dtype',
            'model.lora', 'data', 'train.batch_size', 'train.seq_len',
            'eval.dataset', 'eval.config')


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def identity(config_json: dict[str, Any]) -> dict[str, Any]:
  """The fields of a config (as JSON) that IDENTITY names, flattened."""
  return {k: v for k, v in _flat(config_json).items()
          if any(k == p or k.startswith(p + '.') for p in IDENTITY)}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """'field: old -> new' for every identity field that differs."""
  a, b = identity(old), identity(new)
  return [f'{k}: {a.get(k, "(absent)")!r} -> {b.get(k, "(absent)")!r}'
          for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def claim(path: str | pathlib.Path, config: ml_collections.ConfigDict,
          allow_changed: bool = False, write: bool = True) -> pathlib.Path:
  """Checks that `path` may hold the run of `config`, then records it.

  Args:
    path: the workdir (created if missing).
    config: the run's config.
    allow_changed: accept a workdir whose config.json differs in identity.
    write: write config.json (process 0 only, on several hosts).

  Returns:
    The workdir.

  Raises:
    UserError: for an empty path, a file, or a workdir of another run.
  """
  if not str(path).strip():
    raise errors.UserError('--workdir is empty: name a directory for the outputs.')
  workdir = pathlib.Path(path)
  if workdir.exists() and not workdir.is_dir():
    raise errors.UserError(f'--workdir={workdir} is a file, not a directory.')
  new = json.loads(config.to_json_best_effort())
  previous = workdir / CONFIG
  if previous.exists():
    try:
      old = json.loads(previous.read_text())
    except json.JSONDecodeError:
      old = None  # Unreadable: treated as changed.
    diff = ['config.json is unreadable'] if old is None else changes(old, new)
    if diff and not allow_changed:
      raise errors.UserError(
          f'{workdir} holds another run ({"; ".join(diff)}). Use another '
          '--workdir, or pass --allow_changed_config to continue this one '
          'with the new config.')
    if diff and write:
      previous.rename(workdir / f'config.{time.strftime("%Y%m%d-%H%M%S")}.json')
  if write:
    workdir.mkdir(parents=True, exist_ok=True)
    with paths.atomic_path(previous) as tmp:
      tmp.write_text(json.dumps(new, indent=2) + '\n')
  return workdir
