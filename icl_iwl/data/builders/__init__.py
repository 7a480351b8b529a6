"""TFDS builders of every synthetic dataset, and their registry.

Registered datasets (`DATASETS.names()`): reversals, syllogisms,
reversal_curse, semantic, ictrain, each with configs 'full' (default) and
'small'. Read datasets (these and imported ones) through
`icl_iwl.data.datasets.resolve`. Importing this package registers the
builders with TFDS, so
`tfds.data_source('semantic/small', split='test_holdout', data_dir=...)`
works as well.
"""

import os

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
