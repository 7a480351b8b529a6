"""User datasets: already-validated records written as one TFDS dataset.

Every user dataset is a config of the TFDS builder `jsonl`, named by the
user, so it reads back as `icl_iwl.data.datasets.resolve('jsonl/<name>')`
(or `tfds.data_source('jsonl/<name>', split=...)`). The importers
(`icl_iwl.data.jsonl`, `icl_iwl.data.berglund`) validate every input line and
then call `write`.
"""

import dataclasses
import os
import pathlib
import re
import shutil
from typing import Sequence

import tensorflow_datasets as tfds

from icl_iwl import errors
from icl_iwl import paths
from icl_iwl.data import schema
from icl_iwl.data.builders import base

NAME = 'jsonl'
_NAME_RE = re.compile(r'[A-Za-z0-9_]+')


@dataclasses.dataclass(eq=False)
class UserConfig(tfds.core.BuilderConfig):
  """A user dataset: its records per split and the kinds among them."""

  splits: base.Splits = dataclasses.field(default_factory=dict, repr=False)
  kinds: tuple[schema.RecordKind, ...] = ()


class Jsonl(base.RecordBuilder):
  """Documents, MC probes and task pairs imported from user files."""

  def record_kinds(self) -> Sequence[schema.RecordKind]:
    return self.builder_config.kinds

  def generate(self, config: UserConfig) -> base.Splits:
    return config.splits


def valid_name(name: str) -> bool:
  """Whether `name` can name a user dataset (or one of its splits)."""
  return bool(_NAME_RE.fullmatch(name))


def directory(name: str, data_dir: str | pathlib.Path) -> pathlib.Path | None:
  """The newest written version directory of user dataset `name`, or None."""
  home = pathlib.Path(data_dir) / NAME / name
  versions = [d for d in home.glob('*.*.*')
              if d.is_dir() and (d / 'dataset_info.json').exists()]
  return max(versions, key=lambda d: tfds.core.Version(d.name), default=None)


def write(
    name: str,
    splits: base.Splits,
    kinds: Sequence[schema.RecordKind],
    data_dir: str | pathlib.Path | None = None,
    overwrite: bool = False,
) -> tfds.core.DatasetBuilder:
  """Writes validated `splits` as the user dataset `jsonl/<name>`.

  An existing dataset of that name is replaced only if `overwrite`, and only
  once the new one is completely written (see `base.prepare`).

  Raises:
    UserError: on a bad name or split name, or if the dataset exists and
      `overwrite` is False.
  """
  if not valid_name(name):
    raise errors.UserError(f'Dataset name {name!r} must match [A-Za-z0-9_]+.')
  for split in splits:
    if not valid_name(split):
      raise errors.UserError(f'Split name {split!r} must match [A-Za-z0-9_]+.')
  base.check_splits(splits)
  root = pathlib.Path(data_dir or paths.data_dir())
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise errors.UserError(f'Cannot create the data dir {root}: {e.strerror}.') from None
  if not os.access(root, os.W_OK | os.X_OK):
    raise errors.UserError(f'The data dir {root} is not writable.')
  config = UserConfig(name=name, splits=splits, kinds=tuple(kinds),
                      description=f'User dataset {name}.')
  builder = Jsonl(config=config, data_dir=str(root))
  if builder.is_prepared() and not overwrite:
    raise errors.UserError(
        f'{builder.data_dir} exists; pass --overwrite to replace it.')
  own_dir = root / NAME / name
  created = next((d for d in (own_dir.parent, own_dir) if not d.exists()), None)
  try:
    return base.prepare(builder, overwrite=True)
  except BaseException:
    if created is not None:  # A first import that failed leaves nothing.
      shutil.rmtree(created, ignore_errors=True)
    raise
