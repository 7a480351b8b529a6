"""User datasets: already-validated records written as one TFDS dataset.

Every user dataset is a config of the TFDS builder `jsonl`, named by the
user, so it reads back as `tfds.data_source('jsonl/<name>', split=...)` or
`icl_iwl.data.builders.load('jsonl', split, config='<name>')`. The importers
(`icl_iwl.data.jsonl`, `icl_iwl.data.berglund`) validate every input line and
then call `write`.
"""

import dataclasses
import pathlib
import re
import shutil
from typing import Sequence

import tensorflow_datasets as tfds

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


def write(
    name: str,
    splits: base.Splits,
    kinds: Sequence[schema.RecordKind],
    data_dir: str | pathlib.Path | None = None,
    overwrite: bool = False,
) -> tfds.core.DatasetBuilder:
  """Writes validated `splits` as the user dataset `jsonl/<name>`.

  On failure nothing is left behind: TFDS deletes its temporary directory and
  this removes the directories that this call created.

  Raises:
    ValueError: on a bad name or split name, or if the dataset exists and
      `overwrite` is False.
  """
  if not _NAME_RE.fullmatch(name):
    raise ValueError(f'Dataset name {name!r} must match [A-Za-z0-9_]+.')
  for split in splits:
    if not _NAME_RE.fullmatch(split):
      raise ValueError(f'Split name {split!r} must match [A-Za-z0-9_]+.')
  root = pathlib.Path(data_dir or paths.data_dir())
  own_dir = root / NAME / name
  created = next((d for d in (own_dir.parent, own_dir) if not d.exists()), None)
  config = UserConfig(name=name, splits=splits, kinds=tuple(kinds),
                      description=f'User dataset {name}.')
  try:
    builder = Jsonl(config=config, data_dir=str(root))
    if builder.is_prepared() and not overwrite:
      raise ValueError(
          f'{builder.data_dir} exists; pass overwrite to replace it.')
    base.prepare(builder, overwrite=overwrite)
  except BaseException:
    if created is not None:
      shutil.rmtree(created, ignore_errors=True)
    raise
  return builder
