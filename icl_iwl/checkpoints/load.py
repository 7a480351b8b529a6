"""One entry point from a model config to (model, params, tokenizer).

`config.checkpoint` is one of:
  'embedded'      the Gemma 3 270M that ships with the package (GGUF, cached);
  'gguf:PATH'     a Gemma GGUF file (weights and tokenizer, read once);
  'hf:DIR'        a transformers checkpoint directory (and its tokenizer);
  'run:WORKDIR'   a training run's weights (the workdir of icl_iwl.main):
                  its latest checkpoint, or 'run:WORKDIR@best' (the best by
                  the run's `checkpoint.best_metric`), '@last', '@STEP'.
                  LoRA adapters come merged into the weights; the tokenizer
                  is that of the run's own base checkpoint;
  'random'        random init of `config.preset` (with the Gemma 3 tokenizer).

The checkpoint must have the architecture of `config.preset`; if not, a
CheckpointError names every differing field with both values. The model is
`build.model(config)`: the config's dtypes, remat, layer layout and LoRA (a
LoRA config puts fresh adapters on top of the loaded weights). Checkpoints
hold either layout (per-layer or scanned, `model/scan.py`); the params come
back in the model's.
"""

import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from icl_iwl.checkpoints import gguf
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints import params as params_lib
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.model import build
from icl_iwl.model import gemma
from icl_iwl.model import lora as lora_lib
from icl_iwl.model import presets
from icl_iwl.model import scan
from icl_iwl.train import metrics as metrics_lib
from icl_iwl.train import state as state_lib

_KINDS = "'embedded', 'gguf:PATH', 'hf:DIR', 'run:WORKDIR[@best|@last|@STEP]' or 'random'"


def load(config: ml_collections.ConfigDict,
         ) -> tuple[gemma.Transformer, Any, tokenizer_lib.Tokenizer]:
  """(model, params as host numpy arrays or None for 'random', tokenizer)."""
  preset = presets.get(config.preset)
  kind, _, path = config.checkpoint.partition(':')
  if kind == 'gguf':  # One read for the weights and the tokenizer.
    _, params, tok = gguf.load(path, preset)
  else:
    params, tok = _params(config.checkpoint, preset), _tokenizer(config.checkpoint)
  if tok.vocab_size > preset.vocab_size:
    raise CheckpointError(f'The tokenizer has {tok.vocab_size} tokens but preset '
                          f'{preset.name!r} embeds only {preset.vocab_size}.')
  model = build.model(config)
  return model, scan.to_layout(params, model), tok


def _params(spec: str, preset: presets.GemmaConfig) -> Any:
  """The params of checkpoint `spec` (not 'gguf:'), checked against `preset`."""
  kind, _, path = spec.partition(':')
  if kind == 'embedded':
    arch, params = gguf.load_embedded()
    params_lib.check_architecture(arch, preset, 'the embedded Gemma 3 270M')
    return params
  if kind == 'hf':
    return hf.load(path, preset)[1]
  if kind == 'run':
    return _run_params(path, preset)
  if kind == 'random':
    return None
  raise CheckpointError(f'Unknown checkpoint {spec!r}; use {_KINDS}.')


def _tokenizer(spec: str) -> tokenizer_lib.Tokenizer:
  """The tokenizer of checkpoint `spec`, without loading its weights; a run's
  is that of the checkpoint it was trained from."""
  kind, _, path = spec.partition(':')
  if kind in ('embedded', 'random'):
    return tokenizer_lib.load_default()
  if kind == 'gguf':
    return gguf.tokenizer(gguf.read(path))
  if kind == 'hf':
    return tokenizer_lib.from_hf_dir(path)
  if kind == 'run':
    return _tokenizer(_run_config(path.partition('@')[0]).model.checkpoint)
  raise CheckpointError(f'Unknown checkpoint {spec!r}; use {_KINDS}.')


def _run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was started with (<workdir>/config.json)."""
  path = pathlib.Path(workdir)
  if not path.is_dir():
    raise CheckpointError(f'run:{workdir}: no such directory')
  if not (path / 'config.json').is_file():
    raise CheckpointError(f'run:{workdir}: no config.json (not a workdir of '
                          'icl_iwl.main)')
  try:
    return ml_collections.ConfigDict(json.loads((path / 'config.json').read_text()))
  except json.JSONDecodeError as e:
    raise CheckpointError(f'{path / "config.json"}: invalid JSON ({e})') from e


def _step(directory: pathlib.Path, which: str, run: ml_collections.ConfigDict,
          steps: list[int]) -> int:
  """The checkpointed step `which` ('', 'last', 'best' or a number) names."""
  source = f'run:{directory.parent}'
  if not steps:
    raise CheckpointError(f'{source}: no checkpoint in {directory}')
  if which in ('', 'last'):
    return max(steps)
  if which == 'best':
    return _best_step(directory.parent, run, steps)
  if not which.isdigit():
    raise CheckpointError(f'{source}@{which}: use @best, @last or @STEP')
  if int(which) not in steps:
    raise CheckpointError(f'{source}: no checkpoint at step {which}; it has '
                          f'steps {sorted(steps)}')
  return int(which)


def _best_step(workdir: pathlib.Path, run: ml_collections.ConfigDict,
               steps: list[int]) -> int:
  """The checkpoint the run kept as best by its `checkpoint.best_metric`.

  Read from the run's metrics log: orbax keeps no metrics on disk here (the
  manager tracks the best in memory only), so the log is the record. Ties
  go to the later step, as orbax's BestN keeps.
  """
  metric, mode = run.checkpoint.best_metric, run.checkpoint.best_mode
  source = f'run:{workdir}@best'
  if not metric:
    raise CheckpointError(f'{source}: the run kept no best checkpoint (its '
                          'checkpoint.best_metric is empty)')
  logged = {}
  if (workdir / 'metrics.jsonl').is_file():
    logged = {m['step']: m[metric] for m in metrics_lib.read(workdir) if metric in m}
  if not logged:
    raise CheckpointError(f'{source}: the metrics log has no {metric!r}')
  sign = 1 if mode == 'max' else -1
  best = max(logged, key=lambda s: (sign * logged[s], s))
  if best not in steps:
    raise CheckpointError(
        f'{source}: the best {metric} ({logged[best]}) was at step {best}, whose '
        f'checkpoint is gone (kept: {sorted(steps)}); name a step with @STEP')
  return best


def _read_params(path: pathlib.Path) -> dict[str, Any]:
  """{'params', 'frozen'} of a saved train state, as host numpy arrays.

  Like `Checkpointer.load_numpy` (any mesh or process count saved it), but
  read-only and without the optimizer moments: opening a Checkpointer
  deletes the in-flight saves of a run that is still training.
  """
  checkpointer = ocp.PyTreeCheckpointer()
  saved = checkpointer.metadata(path).item_metadata.tree
  wanted = {k: saved[k] for k in ('params', 'frozen') if k in saved}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
      item=wanted, restore_args=restore_args, partial_restore=True))


def _run_params(spec: str, preset: presets.GemmaConfig) -> Any:
  """The params of 'WORKDIR[@which]' (LoRA merged, host numpy arrays)."""
  workdir, _, which = spec.partition('@')
  run = _run_config(workdir)
  if 'checkpoint' not in run or 'model' not in run:
    raise CheckpointError(f'run:{workdir}: its config.json is not a training '
                          'config (no model or checkpoint section)')
  # The run's layout and adapters (a run's config may predate newer fields).
  model = gemma.Transformer(presets.get(run.model.preset), lora=build.lora(run.model),
                            scan_layers=run.model.get('scan_layers', False))
  source = f'run:{workdir}'
  params_lib.check_architecture(model.config, preset, source)
  directory = pathlib.Path(workdir).absolute() / 'checkpoints'
  if not directory.is_dir():
    raise CheckpointError(f'{source}: no checkpoint ({directory} does not exist)')
  step = _step(directory, which, run, ocp.path.step.checkpoint_steps(directory))
  state = _read_params(directory / str(step) / 'state')
  params = state_lib.merge(state['params'], state.get('frozen') or {})
  if model.lora is not None:
    params = jax.tree.map(np.asarray, lora_lib.merge(model, params))
  params = scan.to_layout(params, model.clone(scan_layers=False))
  params_lib.check(params_lib.flatten(params), preset, f'{source}@{step}')
  return params
