"""Building blocks for experiment configs (configs/*.py), and their checks.

Every config file defines `get_config(arg)`; these helpers give the shared
sub-configs their defaults, so a config file only states what it changes.
No jax here: a config file loads in milliseconds, and `validate` checks a
config before anything heavy (a model, a dataset) is loaded.

The blocks a job reads:
  model       which model, from where, in which dtypes, LoRA       (every job)
  mesh/rules  device mesh and logical-axis rules (sharding/axes.py) (every job)
  data        the training split and how sequences are built        (train)
  train       optimizer and batch shape                             (train)
  checkpoint  orbax checkpointing                                   (train)
  eval        the probe dataset and splits                          (every job)
  scorer      eval.scoring.ScorerConfig                             (every job)
  icl         eval.icl.IclConfig                                    (eval_icl)
  augment     augmentation passes (icl_iwl/augment/)                (augment)
"""

import dataclasses
import difflib
import functools
import importlib.util
import pathlib
import re
import sys
from typing import Any, Iterable, Sequence

from absl import flags
import ml_collections

from icl_iwl import errors
from icl_iwl import registry
from icl_iwl.eval import options
from icl_iwl.model import presets
from icl_iwl.sharding import axes

ConfigDict = ml_collections.ConfigDict

DTYPES = ('float32', 'bfloat16')
CHECKPOINTS = ('embedded', 'random', 'gguf:PATH', 'hf:DIR', 'run:WORKDIR')
LORA_TARGETS = presets.LORA_TARGETS
REMAT = ('none', 'full', 'save_dots')  # The keys of gemma.REMAT_POLICIES.


class ConfigError(errors.UserError):
  """A config value that cannot work, named with its field."""


# Blocks ----------------------------------------------------------------------


def model(preset: str = 'gemma3_270m', checkpoint: str = 'embedded',
          dtype: str = 'float32') -> ConfigDict:
  """Which model, from where, in which dtypes (see checkpoints/load.py).

  lora.rank > 0 trains low-rank adapters on `lora.targets` only. `remat`
  rematerializes each block ('none', 'full' or 'save_dots'; see
  `gemma.REMAT_POLICIES`); `scan_layers` stacks the layers and scans them,
  so FSDP gathers one layer's weights at a time (checkpoints load into
  either layout).
  """
  return ConfigDict(dict(
      preset=preset, checkpoint=checkpoint, dtype=dtype, param_dtype='float32',
      remat='none', scan_layers=False,
      lora=dict(rank=0, alpha=16.0, targets=LORA_TARGETS)))


def scorer(**overrides) -> ConfigDict:
  """Fields of `eval.options.ScorerConfig`, its defaults."""
  c = ConfigDict(dataclasses.asdict(options.ScorerConfig()))
  c.update(overrides)
  return c


def icl(**overrides) -> ConfigDict:
  """Fields of `eval.options.IclConfig`, its defaults."""
  c = ConfigDict(dataclasses.asdict(options.IclConfig()))
  c.update(overrides)
  return c


def base(job: str) -> ConfigDict:
  """The fields every job reads."""
  c = ConfigDict()
  c.job = job
  c.seed = 0
  c.mesh = axes.DEFAULT_MESH
  c.rules = axes.DEFAULT_RULES
  c.model = model()
  return c


def train(**overrides) -> ConfigDict:
  """Optimization (train/optim.py) and batch shape."""
  c = ConfigDict(dict(
      steps=200, batch_size=8, seq_len=128, accum=1, learning_rate=3e-4,
      warmup_steps=10, schedule='cosine', final_lr_fraction=0.1, grad_clip=1.0,
      b1=0.9, b2=0.999, weight_decay=0.0, log_every=10, peak_flops=0.0))
  c.update(overrides)
  return c


def data(dataset: str, **overrides) -> ConfigDict:
  """Which split trains, and how each sequence is built (data/samplers.py).

  `dataset` is a registered dataset (`config` 'full' or 'small') or
  'jsonl/<name>' (an imported one; `config` is ignored). IC-Train samplers
  ('random', 'similar', 'contrastive', 'mixture') put `num_context` pairs in
  context; 'similar' and 'contrastive' rank them by `similarity` ('bm25' or
  'embedding'); 'contrastive' draws its grade (similar slots) g with
  probability grades[g] and, with `near_duplicates`, fills them with pairs
  one word away with another output first; `mixture` is the samplers' mix
  for sampler 'mixture', 'name:weight,...'; `tasks` keeps the IC-Train pairs
  of these tasks ('translation,classification'; '' every one). `sources` mixes other datasets
  into the training records, e.g. 'original:1,jsonl/augment_reversals:1'
  (augmented fine-tuning, see augment/mixture.py; '' is the split alone).
  """
  c = ConfigDict(dict(dataset=dataset, config='full', split='train',
                      sampler='documents', num_context=4, seed=0,
                      similarity='bm25', grades=(0.5, 0.5),
                      near_duplicates=False, mixture='', tasks='', sources=''))
  c.update(overrides)
  return c


def checkpoint(**overrides) -> ConfigDict:
  """Orbax checkpointing (checkpoints/manager.py); `async_save` is ignored
  (saves are synchronous) in a process with hostmem.py's malloc settings."""
  c = ConfigDict(dict(every=50, keep=2, best_metric='', best_mode='max',
                      async_save=True))
  c.update(overrides)
  return c


def evaluation(dataset: str = '', config: str = 'full', splits: str = '',
               limit: int = 0, every: int = 0, grades: str = '') -> ConfigDict:
  """Which probes are scored: `dataset`'s comma-separated `splits` ('': every
  multiple-choice split), the first `limit` items of each (0: all). In a
  training config, `dataset` '' means the training dataset, and the eval hook
  runs every `every` steps and at the end (0: never). `grades` (IC-Train
  datasets): score the IWL / ICL / copy probes with contexts of these
  similarity grades instead ('none,random,similar,near_duplicate', see
  eval/ictrain.py; `limit` then counts per task)."""
  return ConfigDict(dict(dataset=dataset, config=config, splits=splits,
                         limit=limit, every=every, grades=grades))


# The passes that each word of configs/augment.py's arg runs.
AUGMENT_GROUPS = {'local': 'rephrase,reverse,infer', 'global': 'global',
                  'split': 'sentences'}


def augmented_name(dataset: str, config: str = 'full',
                   groups: Sequence[str] = (), tiny: bool = False) -> str:
  """The user dataset configs/augment.py writes from `dataset`:
  augment_<dataset>[_<group>...][_<config>, unless 'full'][_tiny] (a tiny
  model's noise never takes the name of a real run's dataset)."""
  parts = ['augment', dataset.removeprefix('jsonl/'), *groups]
  if config != 'full' and not dataset.startswith('jsonl/'):
    parts.append(config)
  return '_'.join(parts + ['tiny'] * tiny)


def augment_stage(file: str, dataset: str, config: str,
                  groups: Sequence[str], tiny: bool) -> ConfigDict:
  """An experiment's augmentation stage: configs/augment.py (`file`) with
  the passes of `groups` over `dataset`'s `config`, writing
  jsonl/<augmented_name(...)>."""
  c = load_file(f'{file}:{dataset},{",".join(groups)}{",tiny" * tiny}')
  c.augment.config = config
  c.augment.output = augmented_name(dataset, config, groups, tiny)
  return c


def augment(dataset: str, templates: dict[str, str], **overrides) -> ConfigDict:
  """Augmentation passes over `dataset`'s training documents (see
  icl_iwl/augment/passes.py); `templates` by pass name."""
  c = ConfigDict(dict(
      dataset=dataset, config='full', split='train', limit=0,
      passes=','.join(AUGMENT_GROUPS[g] for g in ('local', 'global')),
      output=augmented_name(dataset), unit='sentence',
      sentence_split='independent', samples=1, temperature=0.0,
      max_new_tokens=64, stop=('\n',), seed=0, batch_size=8,
      context_budget=4096, templates=templates))
  c.update(overrides)
  return c


# Config files ---------------------------------------------------------------


class DatasetWords:
  """The dataset names a config arg accepts: registered ones, jsonl/<name>."""

  def _names(self) -> list[str]:
    from icl_iwl.data import datasets  # pylint: disable=g-import-not-at-top
    return datasets.names()

  def __contains__(self, word: str) -> bool:
    return word in self._names() or (word.startswith('jsonl/') and len(word) > 6)

  def __iter__(self):
    return iter(self._names() + ['jsonl/<name>'])


DATASET_WORDS = DatasetWords()


def parse_arg(arg: str | None, choices: dict[str, Iterable[str]] | None = None,
              **defaults) -> ConfigDict:
  """The `arg` of get_config(arg) as fields, e.g. 'reversals,lora,steps=50'.

  'key=value' sets a field (converted to the default's type); a bare word
  naming a boolean field sets it True; any other bare word must be one of the
  `choices` of a field (e.g. the dataset names) and sets that field. Anything
  else is an error naming the valid words.
  """
  c = ConfigDict(defaults)
  choices = choices or {}
  flags = [k for k, v in defaults.items() if isinstance(v, bool)]
  for part in filter(None, (arg or '').split(',')):
    key, eq, value = (s.strip() for s in part.partition('='))
    if not eq:
      if key in flags:
        key, value = key, 'true'
      else:
        field = next((f for f, valid in choices.items() if key in valid), None)
        if field is None:
          valid = flags + [w for ws in choices.values() for w in ws]
          raise ConfigError(registry.unknown_name_message(
              f'word in the config arg {arg!r}:', key, valid))
        key, value = field, key
    if key not in defaults:
      raise ConfigError(registry.unknown_name_message(
          f'field in the config arg {arg!r}:', key, list(defaults)))
    kind = type(defaults[key])
    try:
      c[key] = _convert(value, kind)
    except ValueError:
      raise ConfigError(f'Config arg {arg!r}: {key}={value!r} is not a '
                        f'{kind.__name__}.') from None
    if key in choices and c[key] not in choices[key]:
      raise ConfigError(registry.unknown_name_message(
          f'{key} in the config arg {arg!r}:', c[key], list(choices[key])))
  return c


def _convert(value: str, kind: type) -> Any:
  if kind is bool:
    if value.lower() not in ('1', 'true', 'yes', '0', 'false', 'no'):
      raise ValueError(value)
    return value.lower() in ('1', 'true', 'yes')
  return kind(value)


def load_module(file: str):
  """The Python module of a config file (get_config, maybe get_sweep)."""
  if not pathlib.Path(file).is_file():
    raise ConfigError(f'No config file {file!r}.')
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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing for a command with --config (`app.run(...,
  flags_parser=parse_flags)`), with config-key errors turned into one clear
  line on stderr and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
  except (KeyError, AttributeError, ValueError) as e:
    message = str(e).strip('\'"')
  config_file = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if config_file:
    try:
      message = bad_override(load_file(config_file), argv) or message
    except errors.UserError as e:  # From get_config(arg): without the traceback
      message = str(e)             # that config_flags wraps around it.
    except Exception:  # pylint: disable=broad-except  # Report the first error.
      pass
  print(f'FATAL: {message}\nPass --help for usage.', file=sys.stderr)
  sys.exit(2)


# Checks ---------------------------------------------------------------------


def mesh_sizes(mesh: Sequence[tuple[str, int]], num_devices: int) -> list[int]:
  """The axis sizes of mesh config `mesh` on `num_devices` devices (-1: the
  rest).

  Raises:
    ConfigError: if the sizes cannot multiply to `num_devices`.
  """
  try:
    names = [str(name) for name, _ in mesh]
    sizes = [int(size) for _, size in mesh]
  except (TypeError, ValueError):
    raise ConfigError(f'config.mesh must be ((name, size), ...), got {mesh!r}.') from None
  described = ', '.join(f'{n}={s}' for n, s in zip(names, sizes))
  if len(set(names)) != len(names):
    raise ConfigError(f'config.mesh repeats an axis name: {described}.')
  if sizes.count(-1) > 1:
    raise ConfigError(f'config.mesh: at most one axis may be -1: {described}.')
  known = 1
  for s in sizes:
    known *= s if s != -1 else 1
  if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
    raise ConfigError(f'config.mesh ({described}) does not divide the '
                      f'{num_devices} available devices.')
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  total = 1
  for s in sizes:
    total *= s
  if total != num_devices:
    raise ConfigError(
        f'config.mesh ({described}) uses {total} devices but {num_devices} are '
        'available; use -1 for one axis to take the rest.')
  return sizes


def batch_shards(config: ConfigDict, num_devices: int) -> int:
  """How many shards the batch is split into (the product of the mesh axes
  that the 'batch' rule names)."""
  sizes = dict(zip([n for n, _ in config.mesh], mesh_sizes(config.mesh, num_devices)))
  rule = dict(config.rules).get(axes.BATCH)
  names = () if rule is None else (rule,) if isinstance(rule, str) else tuple(rule)
  shards = 1
  for name in names:
    if name not in sizes:
      raise ConfigError(f'config.rules: {axes.BATCH!r} -> {name!r}, but the mesh '
                        f'has no axis {name!r} (it has {", ".join(sizes)}).')
    shards *= sizes[name]
  return shards


def _require(ok: bool, field: str, value: Any, why: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field} = {value!r}: {why}.')


def _one_of(field: str, value: Any, valid: Sequence[Any]) -> None:
  if value not in valid:
    raise ConfigError(registry.unknown_name_message(f'config.{field}', value,
                                                    [str(v) for v in valid]))


def check_checkpoint_spec(spec: str, field: str = 'config.model.checkpoint') -> None:
  """Raises ConfigError (naming `field`) unless `spec` is a checkpoint spec
  whose file or directory exists (see checkpoints/load.py)."""
  kind, colon, path = spec.partition(':')
  if kind in ('embedded', 'random') and not colon:
    return
  if kind not in ('gguf', 'hf', 'run') or not path:
    raise ConfigError(registry.unknown_name_message(
        field, spec, list(CHECKPOINTS)))
  path = path.split('@')[0] if kind == 'run' else path
  p = pathlib.Path(path).expanduser()
  if kind == 'gguf' and not p.is_file():
    raise ConfigError(f'{field} = {spec!r}: no GGUF file {path}.')
  if kind in ('hf', 'run') and not (p / 'config.json').is_file():
    what = 'transformers checkpoint' if kind == 'hf' else 'training run'
    raise ConfigError(f'{field} = {spec!r}: {path} is not a '
                      f'{what} directory (no config.json).')


def _check_model(c: ConfigDict) -> None:
  _one_of('model.preset', c.preset, presets.PRESETS.names())
  _one_of('model.dtype', c.dtype, DTYPES)
  _one_of('model.param_dtype', c.param_dtype, DTYPES)
  _one_of('model.remat', c.remat, REMAT)
  check_checkpoint_spec(c.checkpoint)
  _require(c.lora.rank >= 0, 'model.lora.rank', c.lora.rank, 'must be >= 0')
  for target in c.lora.targets:
    _one_of('model.lora.targets', target, LORA_TARGETS)


def _check_dataset(block: str, name: str, config: str, splits: Sequence[str],
                   probes: bool) -> None:
  """The dataset of config.<block> resolves and has the splits (built if
  missing)."""
  from icl_iwl.data import datasets  # pylint: disable=g-import-not-at-top
  try:
    label = datasets.resolve(name, config).label
    valid = (_splits if datasets.is_user(name) else _builtin_splits)(
        name, config, probes)
  except errors.UserError as e:
    raise ConfigError(f'config.{block}.dataset: {e}') from None
  if probes and not valid:
    raise ConfigError(f'config.{block}.dataset: {label} has no multiple-choice '
                      'probe splits.')
  for split in splits:
    if split not in valid:
      what = 'probe split' if probes else 'split'
      field = 'splits' if probes else 'split'
      raise ConfigError(registry.unknown_name_message(
          f'{what} of {label} in config.{block}.{field}:', split, valid))


def _splits(name: str, config: str, probes: bool) -> list[str]:
  """The probe splits (or all splits) of a dataset."""
  from icl_iwl.data import datasets  # pylint: disable=g-import-not-at-top
  ds = datasets.resolve(name, config)
  return ds.probe_splits() if probes else ds.splits()


# A built-in dataset's splits and records are read once per process (many
# configs and experiment stages check the same ones; reading them back from
# TFDS takes ~0.1 s a split, ictrain/full's 6000 pairs seconds); an imported
# dataset's are read every time (it may be rewritten).
_builtin_splits = functools.lru_cache(maxsize=64)(_splits)


def eval_dataset(config: ConfigDict) -> tuple[str, str]:
  """(dataset, config) whose probes a job scores: `eval.dataset`, or in a
  training config the training dataset when `eval.dataset` is ''."""
  if config.eval.dataset:
    return config.eval.dataset, config.eval.config
  if 'data' in config:
    return config.data.dataset, config.data.config
  raise ConfigError('config.eval.dataset is empty: name the dataset to score.')


def split_list(splits: str) -> list[str]:
  """'a, b' -> ['a', 'b']."""
  return [s.strip() for s in splits.split(',') if s.strip()]


def _check_augment(a: ConfigDict) -> None:
  # pylint: disable=g-import-not-at-top
  from icl_iwl.augment import passes
  from icl_iwl.data import datasets
  from icl_iwl.data.builders import user
  _check_dataset('augment', a.dataset, a.config, [a.split], probes=False)
  _require(any(r.get('text') for r in _split_records(a.dataset, a.config, a.split)),
           'augment.dataset', a.dataset,
           f'{datasets.resolve(a.dataset, a.config).label} has no documents '
           f'(records with a text) in split {a.split!r} to augment')
  for field in ('samples', 'max_new_tokens', 'batch_size', 'context_budget'):
    _require(a[field] > 0, f'augment.{field}', a[field], 'must be > 0')
  _require(a.limit >= 0, 'augment.limit', a.limit, 'must be >= 0')
  _require(a.temperature >= 0, 'augment.temperature', a.temperature,
           'must be >= 0')
  _require(a.samples == 1 or a.temperature > 0, 'augment.samples', a.samples,
           'several samples need augment.temperature > 0 (greedy ones are '
           'all the same)')
  _require(user.valid_name(a.output), 'augment.output', a.output,
           'must match [A-Za-z0-9_]+ (the dataset is jsonl/<output>)')
  try:
    passes.check(a)
  except ValueError as e:
    raise ConfigError(f'config.{e}') from None


def _split_records(name: str, config: str, split: str) -> list[dict[str, Any]]:
  """A split's records for the checks (a built-in dataset's once per
  process, see `_builtin_splits`)."""
  from icl_iwl.data import datasets  # pylint: disable=g-import-not-at-top
  if datasets.is_user(name):  # An imported dataset may be rewritten.
    return datasets.resolve(name, config).records(split)
  return _builtin_records(name, config, split)


@functools.lru_cache(maxsize=64)
def _builtin_records(name: str, config: str, split: str) -> list[dict[str, Any]]:
  from icl_iwl.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets.resolve(name, config).records(split)


def validate(config: ConfigDict, num_devices: int | None = None,
             produced: frozenset[str] = frozenset()) -> None:
  """Raises ConfigError naming the first field that cannot work.

  Checks what would otherwise fail after a model is loaded: names (preset,
  dtype, checkpoint, dataset, split, sampler), paths, sizes, and with
  `num_devices` the mesh and the batch's divisibility. Datasets are built if
  missing (seconds), models never loaded. `produced`: imported datasets that
  an earlier stage of an experiment writes (not checked for existence).
  """
  if 'stages' in config:  # An experiment: each stage is a whole job config.
    order = tuple(config.order)
    wrong = sorted({n for n in order if n not in config.stages or order.count(n) > 1})
    if wrong or not order:
      raise ConfigError(f'config.order {order} must name stages of this '
                        f'experiment, each once ({", ".join(wrong) or "none named"}): '
                        f'{", ".join(config.stages)}.')
    for name in config.order:
      stage = config.stages[name]
      try:
        validate(stage, num_devices, produced)
      except ConfigError as e:
        raise ConfigError(f'stage {name!r}: {e}') from None
      if 'augment' in stage:  # Later stages may train on what it writes.
        produced = produced | {f'jsonl/{stage.augment.output}'}
    return
  for name in ('job', 'seed', 'mesh', 'rules', 'model'):
    if name not in config:
      raise ConfigError(f'config.{name} is missing (start from config_lib.base).')
  _check_model(config.model)
  for logical, _ in config.rules:
    _one_of('rules', logical, axes.LOGICAL_AXES)
  shards = 1 if num_devices is None else batch_shards(config, num_devices)
  if 'train' in config:
    t = config.train
    for field in ('steps', 'batch_size', 'seq_len', 'accum', 'log_every'):
      _require(t[field] > 0, f'train.{field}', t[field], 'must be > 0')
    _require(t.learning_rate > 0, 'train.learning_rate', t.learning_rate, 'must be > 0')
    _require(t.warmup_steps >= 0, 'train.warmup_steps', t.warmup_steps,
             'must be >= 0')
    _one_of('train.schedule', t.schedule, ('cosine', 'constant'))
    _require(t.batch_size % (t.accum * shards) == 0, 'train.batch_size',
             t.batch_size, f'must divide into train.accum = {t.accum} micro-batches '
             f'of whole shards over the {shards} batch shards of the mesh')
  if 'checkpoint' in config:
    k = config.checkpoint
    _require(k.every > 0, 'checkpoint.every', k.every, 'must be > 0')
    _require(k.keep > 0, 'checkpoint.keep', k.keep, 'must be > 0')
    _one_of('checkpoint.best_mode', k.best_mode, ('max', 'min'))
  if 'data' in config:
    from icl_iwl.data import samplers  # pylint: disable=g-import-not-at-top
    d = config.data
    _one_of('data.sampler', d.sampler, samplers.SAMPLERS.names())
    _require(d.num_context >= 0, 'data.num_context', d.num_context, 'must be >= 0')
    _check_dataset('data', d.dataset, d.config, [d.split], probes=False)
    try:  # The sampler finds what it needs in the split.
      samplers.SAMPLERS.get(d.sampler)(_split_records(d.dataset, d.config, d.split), d)
    except ValueError as e:
      raise ConfigError(f'config.data.sampler = {d.sampler!r} on '
                        f'{d.dataset}/{d.split}: {e}') from None
    if d.get('sources'):
      from icl_iwl.augment import mixture  # pylint: disable=g-import-not-at-top
      try:
        mixture.check(d, skip=produced)
      except errors.UserError as e:
        raise ConfigError(f'config.data.sources = {d.sources!r}: {e}') from None
  if 'augment' in config:
    _check_augment(config.augment)
  if 'eval' in config:
    e = config.eval
    _require(e.limit >= 0, 'eval.limit', e.limit, 'must be >= 0')
    _require(e.every >= 0, 'eval.every', e.every, 'must be >= 0')
    if e.dataset != 'quickstart':
      name, cfg = eval_dataset(config)
      _check_dataset('eval' if e.dataset else 'data', name, cfg,
                     split_list(e.splits), probes=True)
    if e.get('grades'):
      from icl_iwl.eval import ictrain  # pylint: disable=g-import-not-at-top
      for grade in split_list(e.grades):
        _one_of('eval.grades', grade, ictrain.GRADES)
      name, cfg = eval_dataset(config)
      _check_dataset('eval' if e.dataset else 'data', name, cfg,
                     [f'test_{k}' for k in ictrain.KINDS], probes=True)
  if 'scorer' in config:
    s = config.scorer
    try:
      options.ScorerConfig(**s)
    except (TypeError, ValueError) as e:
      raise ConfigError(f'config.scorer: {e}') from None
    _require(s.rows_per_batch > 0, 'scorer.rows_per_batch', s.rows_per_batch,
             'must be > 0')
    _require(all(b > 0 for b in s.buckets), 'scorer.buckets', s.buckets,
             'must be positive lengths')
  if 'icl' in config:
    i = config.icl
    try:
      options.IclConfig(**i)
    except (TypeError, ValueError) as e:
      raise ConfigError(f'config.icl: {e}') from None
    _require('{documents}' in i.template, 'icl.template', i.template,
             "must contain '{documents}'")
    _require(i.budget > 0, 'icl.budget', i.budget, 'must be > 0')
    _require(i.num_subsamples > 0, 'icl.num_subsamples', i.num_subsamples,
             'must be > 0')
