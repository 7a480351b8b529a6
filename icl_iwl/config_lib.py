"""Building blocks for experiment configs (configs/*.py) and config checks.

Every config file defines `get_config(arg)`; these helpers give the shared
sub-configs their defaults, so a config file only states what it changes.
"""

import difflib
import importlib.util
import pathlib
import re

import ml_collections

from icl_iwl import registry
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib

ConfigDict = ml_collections.ConfigDict


def model(preset: str = 'gemma3_270m', checkpoint: str = 'embedded',
          dtype: str = 'float32') -> ConfigDict:
  """Which model, from where, in which dtypes (see checkpoints/load.py).

  lora.rank > 0 trains low-rank adapters on `lora.targets` only.
  """
  return ConfigDict(dict(
      preset=preset, checkpoint=checkpoint, dtype=dtype, param_dtype='float32',
      remat=False, lora=dict(rank=0, alpha=16.0, targets=(
          'q_einsum', 'kv_einsum', 'qkv_einsum', 'attn_vec_einsum',
          'gating_einsum', 'linear'))))


def scorer(**overrides) -> ConfigDict:
  """Fields of `eval.scoring.ScorerConfig`."""
  c = ConfigDict(dict(rows_per_batch=8, buckets=(32, 64, 128, 256, 512, 1024),
                      min_row_length=128,
                      context_chunk=512, max_context=8192, too_long='error',
                      share_context=True, logit_chunk=64))
  c.update(overrides)
  return c


def icl(**overrides) -> ConfigDict:
  """Fields of `eval.icl.IclConfig`."""
  c = ConfigDict(dict(template='{documents}\n\n', separator='\n\n', budget=4096,
                      num_subsamples=8, docs_per_fact=1, relevant_fraction=0.5,
                      seed=0))
  c.update(overrides)
  return c


def base(job: str) -> ConfigDict:
  """The fields every job reads."""
  c = ConfigDict()
  c.job = job
  c.seed = 0
  c.mesh = mesh_lib.DEFAULT_MESH
  c.rules = rules_lib.DEFAULT_RULES
  c.model = model()
  return c


def parse_arg(arg: str | None, **defaults) -> ConfigDict:
  """The `arg` of get_config(arg) as fields, e.g. 'reversals,lora,steps=50'.

  'key=value' sets a field (converted to the default's type); a bare word
  naming a boolean field sets it True; any other bare word sets the first field.
  """
  c = ConfigDict(defaults)
  first = next(iter(defaults))
  for part in filter(None, (arg or '').split(',')):
    key, eq, value = part.partition('=')
    if not eq:
      key, value = (key, 'true') if isinstance(defaults.get(key), bool) else (first, key)
    if key not in defaults:
      raise KeyError(registry.unknown_name_message('config arg', key, list(defaults)))
    kind = type(defaults[key])
    c[key] = value.lower() in ('1', 'true', 'yes') if kind is bool else kind(value)
  return c


def load_module(file: str):
  """The Python module of a config file (get_config, maybe get_sweep)."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(file).stem, file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_file(path: str) -> ConfigDict:
  """get_config(arg) of 'configs/x.py[:arg]' (as --config= would load it)."""
  file, _, arg = path.partition(':')
  return load_module(file).get_config(arg or None)


def bad_override(config: ConfigDict, argv: list[str]) -> str | None:
  """The first --config.a.b=... override naming no field, explained."""
  for arg in argv:
    m = re.match(r'--config\.([\w.]+)', arg)
    if not m:
      continue
    node, walked = config, []
    for key in m.group(1).split('.'):
      fields = list(node.keys()) if isinstance(node, ConfigDict) else []
      if key not in fields:
        where = '.'.join(walked) or 'the config'
        close = difflib.get_close_matches(key, fields, n=3, cutoff=0.5)
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        return (f'Unknown config key {key!r} in {arg} (under {where}).{hint} '
                f'Valid keys there: {", ".join(sorted(fields))}.')
      node = node[key]
      walked.append(key)
  return None


def train(**overrides) -> ConfigDict:
  """Optimization (train/optim.py) and batch shape."""
  c = ConfigDict(dict(
      steps=200, batch_size=8, seq_len=128, accum=1, learning_rate=3e-4,
      warmup_steps=10, schedule='cosine', final_lr_fraction=0.1, grad_clip=1.0,
      b1=0.9, b2=0.999, weight_decay=0.0, log_every=10, peak_flops=0.0))
  c.update(overrides)
  return c


def data(dataset: str, **overrides) -> ConfigDict:
  """Which split trains, and how each sequence is built (data/samplers.py)."""
  c = ConfigDict(dict(dataset=dataset, config='full', split='train',
                      sampler='documents', num_context=4, seed=0))
  c.update(overrides)
  return c


def checkpoint(**overrides) -> ConfigDict:
  """Orbax checkpointing (checkpoints/manager.py)."""
  c = ConfigDict(dict(every=50, keep=2, best_metric='', best_mode='max',
                      async_save=True))
  c.update(overrides)
  return c


def evaluation(splits: str = '', every: int = 0, limit: int = 0) -> ConfigDict:
  """Eval hook: probe splits scored every `every` steps (0: never)."""
  return ConfigDict(dict(splits=splits, every=every, limit=limit))
