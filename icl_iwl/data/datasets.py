"""One resolver for every dataset: the built-in synthetic ones and imported ones.

    from icl_iwl.data import datasets
    ds = datasets.resolve('reversals', 'small')  # built on first use
    ds = datasets.resolve('jsonl/mydata')        # written by icl_iwl.data.jsonl
    ds.splits()          # ['test_forward', 'test_reversal', 'train']
    ds.probe_splits()    # the multiple-choice splits
    ds.records('train')  # decoded records: str / list[str] / int fields

A name is a registered synthetic dataset (`builders.DATASETS`), whose
`config` is 'full' or 'small', or 'jsonl/<name>' for a dataset imported with
`icl_iwl.data.jsonl` or `icl_iwl.data.berglund` (its `config` is ignored).
Every job, the training pipeline and the data commands read datasets here.
"""

import dataclasses
import functools
import os
import pathlib
from typing import Any, Iterator, Sequence

import tensorflow_datasets as tfds

from icl_iwl import errors
from icl_iwl import paths
from icl_iwl import registry
from icl_iwl.data import builders
from icl_iwl.data import schema
from icl_iwl.data.builders import base
from icl_iwl.data.builders import user

USER_PREFIX = f'{user.NAME}/'
Record = dict[str, Any]


def is_user(name: str) -> bool:
  """Whether `name` names an imported dataset ('jsonl/<name>')."""
  return name.startswith(USER_PREFIX)


def names() -> list[str]:
  """The registered synthetic datasets."""
  return builders.DATASETS.names()


def check_name(name: str) -> None:
  """Raises UserError unless `name` is registered or 'jsonl/<name>'."""
  if is_user(name):
    if not user.valid_name(name.removeprefix(USER_PREFIX)):
      raise errors.UserError(
          f'Dataset {name!r}: an imported dataset is jsonl/<name>, the name '
          'made of letters, digits and underscores.')
    return
  if name not in builders.DATASETS:
    raise errors.UserError(registry.unknown_name_message(
        'dataset', name, names() + ['jsonl/<name> (an imported dataset)']))


def select(spec: str) -> list[str]:
  """Dataset names from 'all' or a comma-separated list; unknown names fail."""
  if spec == 'all':
    return names()
  selected = [n.strip() for n in spec.split(',') if n.strip()]
  if not selected:
    raise errors.UserError(f'No dataset in {spec!r}.')
  for name in selected:
    check_name(name)
  return selected


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A resolved dataset; its TFDS builder is made (and built) on first use."""

  name: str
  config: str
  data_dir: str

  @property
  def label(self) -> str:
    """'reversals/full', or 'jsonl/mydata' for an imported dataset."""
    return self.name if is_user(self.name) else f'{self.name}/{self.config}'

  @functools.cached_property
  def builder(self) -> tfds.core.DatasetBuilder:
    if not is_user(self.name):
      return base.prepare(builders.builder(self.name, self.config, self.data_dir))
    directory = user.directory(self.name.removeprefix(USER_PREFIX), self.data_dir)
    if directory is None:
      raise errors.UserError(
          f'No imported dataset {self.name!r} in {self.data_dir}; write it with '
          '`python -m icl_iwl.data.jsonl --name=...` (or icl_iwl.data.berglund), '
          'or point $ICL_IWL_DATA_DIR at the data dir that holds it.')
    return tfds.builder_from_directory(str(directory))

  def splits(self) -> list[str]:
    return list(self.builder.info.splits)

  def source(self, split: str) -> Sequence[dict[str, Any]]:
    """The split as a random-access TFDS data source (raw records)."""
    if split not in self.builder.info.splits:
      raise errors.UserError(
          f'Dataset {self.label} has no split {split!r}; it has '
          f'{", ".join(self.splits())}.')
    return self.builder.as_data_source(split=split)

  def stream(self, split: str, limit: int | None = None
             ) -> tuple[Iterator[Record], int]:
    """(lazy decoded records, their count) of the first `limit` of a split."""
    source = self.source(split)
    n = len(source) if limit is None else min(limit, len(source))
    return (schema.decode(source[i]) for i in range(n)), n

  def records(self, split: str, limit: int | None = None) -> list[Record]:
    """The decoded records of the first `limit` of a split."""
    return list(self.stream(split, limit)[0])

  def probe_splits(self) -> list[str]:
    """The splits of multiple-choice probes (records with choices), sorted."""
    if 'choices' not in self.builder.info.features:
      return []
    out = []
    for split in self.splits():
      source = self.source(split)
      if len(source) and schema.decode(source[0])['choices']:
        out.append(split)
    return sorted(out)

  def documents(self, split: str = 'train') -> list[Record]:
    """The records of `split` that carry a text (training documents)."""
    return [r for r in self.records(split) if r.get('text')]


def resolve(name: str, config: str = 'full',
            data_dir: str | os.PathLike | None = None) -> Dataset:
  """The dataset `name` (see the module doc); nothing is built yet.

  Raises:
    UserError: for an unknown name or config.
  """
  check_name(name)
  if not is_user(name):
    configs = [c.name for c in builders.DATASETS.get(name).BUILDER_CONFIGS]
    if config not in configs:
      raise errors.UserError(
          f'Dataset {name!r} has no config {config!r}; use one of '
          f'{", ".join(configs)}.')
  else:
    config = name.removeprefix(USER_PREFIX)
  return Dataset(name, config, str(pathlib.Path(data_dir or paths.data_dir())))
