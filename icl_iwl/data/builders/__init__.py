"""TFDS builders of every dataset, their registry, and a loader.

    from icl_iwl.data import builders, schema
    train = builders.load('reversals', 'train', config='small')
    schema.decode(train[0])   # {'id': ..., 'text': ..., 'facts': [...]}

Registered datasets (`DATASETS.names()`): reversals, syllogisms,
reversal_curse, semantic, ictrain, each with configs 'full' (default) and
'small'. User datasets imported with `icl_iwl.data.jsonl` or
`icl_iwl.data.berglund` load as `load('jsonl', split, config=<their name>)`.
Importing this package registers the builders with TFDS, so
`tfds.data_source('semantic/small', split='test_holdout', data_dir=...)`
works as well.
"""

import os
from typing import Any, Sequence

import tensorflow_datasets as tfds

from icl_iwl import paths
from icl_iwl import registry
from icl_iwl.data.builders import base
from icl_iwl.data.builders import ictrain
from icl_iwl.data.builders import reversal_curse
from icl_iwl.data.builders import reversals
from icl_iwl.data.builders import semantic
from icl_iwl.data.builders import syllogisms
from icl_iwl.data.builders import user

DATASETS: registry.Registry[type[base.RecordBuilder]] = registry.Registry(
    'dataset')
DATASETS.register('reversals')(reversals.Reversals)
DATASETS.register('syllogisms')(syllogisms.Syllogisms)
DATASETS.register('reversal_curse')(reversal_curse.ReversalCurse)
DATASETS.register('semantic')(semantic.Semantic)
DATASETS.register('ictrain')(ictrain.Ictrain)


def builder(
    name: str, config: str = 'full', data_dir: str | os.PathLike | None = None
) -> base.RecordBuilder:
  """The builder of registered dataset `name` at `config`."""
  return DATASETS.get(name)(
      config=config, data_dir=str(data_dir or paths.data_dir()))


def load(
    name: str,
    split: str,
    config: str = 'full',
    data_dir: str | os.PathLike | None = None,
) -> Sequence[dict[str, Any]]:
  """A `tfds.data_source` of one split, building the dataset first if needed.

  Args:
    name: a registered dataset, or 'jsonl' for an imported user dataset.
    split: e.g. 'train' or 'test_reversal'.
    config: 'full' or 'small'; for 'jsonl', the user dataset's name.
    data_dir: TFDS data dir; default `icl_iwl.paths.data_dir()`.
  """
  data_dir = str(data_dir or paths.data_dir())
  if name == user.NAME:
    return tfds.data_source(f'{name}/{config}', split=split, data_dir=data_dir,
                            download=False)
  b = builder(name, config, data_dir)
  base.prepare(b)
  return b.as_data_source(split=split)


def select(spec: str) -> list[str]:
  """Dataset names from 'all' or a comma-separated list; unknown names fail.

  'jsonl/<name>' entries (imported user datasets) pass through unchecked.
  """
  if spec == 'all':
    return DATASETS.names()
  names = [n.strip() for n in spec.split(',') if n.strip()]
  for name in names:
    if not name.startswith(f'{user.NAME}/'):
      DATASETS.get(name)  # Raises with the close valid names.
  return names
