"""What every builder shares: seeded configs and one pure generator.

A dataset module defines `generate(config) -> {split: [record, ...]}`, a pure
function of its config (and so of its seed), plus a `RecordBuilder` subclass
naming the record kinds it holds. The builder only writes what `generate`
returns, in TFDS's ArrayRecord format, so it reads back with
`tfds.data_source` / `builder.as_data_source()` and no TensorFlow.
"""

import abc
import contextlib
import dataclasses
import fcntl
import pathlib
import random
import shutil
import sys
import tempfile
from typing import Any, Iterator, Sequence

import tensorflow_datasets as tfds

from icl_iwl import errors
from icl_iwl.data import schema

Record = dict[str, Any]
Splits = dict[str, list[Record]]

FILE_FORMAT = 'array_record'
_LOCK = '.lock'
_STAGING = '.staging-'
_OLD = '.old'


@dataclasses.dataclass(eq=False)
class GeneratorConfig(tfds.core.BuilderConfig):
  """A builder config with the seed of its generator."""

  seed: int = 0


def prepare(builder: tfds.core.DatasetBuilder, overwrite: bool = False
            ) -> tfds.core.DatasetBuilder:
  """Writes `builder`'s dataset unless it exists (or always, if `overwrite`).

  Returns a builder of the same dataset that reads the written data. Nothing
  is ever lost: the dataset is written into a staging directory beside the
  final one and swapped in only when complete (an existing version stays
  readable until then, and survives a failed, killed or interrupted
  rebuild). Builds of one dataset are serialized by a lock file; what a
  killed build left behind (TFDS `incomplete.*` directories, staging
  directories, a half-done swap) is cleaned up or rolled back by the next.
  """
  final = pathlib.Path(builder.data_path)
  home = final.parent  # <data_dir>/<name>/<config>
  home.mkdir(parents=True, exist_ok=True)
  with open(home / _LOCK, 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    _recover(home, final)
    if not overwrite and final.is_dir() and (final / 'dataset_info.json').exists():
      return _reader(builder)
    staging = pathlib.Path(tempfile.mkdtemp(dir=home, prefix=_STAGING))
    try:
      staged = type(builder)(config=builder.builder_config, data_dir=str(staging))
      # TFDS prints its progress to stdout: keep commands' stdout clean.
      with (tempfile.TemporaryDirectory() as downloads,
            contextlib.redirect_stdout(sys.stderr)):
        staged.download_and_prepare(download_dir=downloads)
      old = final.with_name(final.name + _OLD)
      if final.exists():
        final.rename(old)
      pathlib.Path(staged.data_path).rename(final)
      shutil.rmtree(old, ignore_errors=True)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return _reader(builder)


def _reader(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
  """A new builder of the same dataset: it reads what is on disk now."""
  return type(builder)(config=builder.builder_config, data_dir=builder.data_dir_root)


def _recover(home: pathlib.Path, final: pathlib.Path) -> None:
  """Rolls back a swap a killed build left half done; removes its leftovers."""
  old = final.with_name(final.name + _OLD)
  if old.exists():
    if final.exists():
      shutil.rmtree(old)
    else:
      old.rename(final)
  for stale in [*home.glob(f'{_STAGING}*'), *home.glob('incomplete.*')]:
    shutil.rmtree(stale, ignore_errors=True)


def check_splits(splits: Splits) -> None:
  """Raises UserError for what TFDS would reject halfway through a write:
  a repeated id within a split, a string that is not valid Unicode."""
  for split, records in splits.items():
    seen = set()
    for record in records:
      if record['id'] in seen:
        raise errors.UserError(f'Split {split!r}: duplicate id {record["id"]!r}.')
      seen.add(record['id'])
      for name, value in record.items():
        for text in value if isinstance(value, list) else [value]:
          if isinstance(text, str) and not _encodes(text):
            raise errors.UserError(
                f'Split {split!r}, record {record["id"]!r}: field {name!r} is '
                f'not valid Unicode (a lone surrogate?): {text!r}.')


def _encodes(text: str) -> bool:
  try:
    text.encode('utf-8')
  except UnicodeEncodeError:
    return False
  return True


class RecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder whose splits come from `generate(builder_config)`.

  Subclasses set `RECORD_KINDS` (or override `record_kinds`) and
  `BUILDER_CONFIGS` (with 'full' first, the default) and implement `generate`.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  RECORD_KINDS: Sequence[schema.RecordKind] = ()

  def __init__(self, **kwargs: Any):
    kwargs.setdefault('file_format', FILE_FORMAT)
    super().__init__(**kwargs)

  @abc.abstractmethod
  def generate(self, config: tfds.core.BuilderConfig) -> Splits:
    """All splits of the dataset for `config`."""

  def record_kinds(self) -> Sequence[schema.RecordKind]:
    """The kinds of record in this dataset; its features are their union."""
    return self.RECORD_KINDS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=self.__doc__,
        features=schema.features(self.record_kinds()),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    fields = schema.union_fields(self.record_kinds())
    splits = self.generate(self.builder_config)
    check_splits(splits)
    return {split: self._generate_examples(records, fields)
            for split, records in splits.items()}

  def _generate_examples(
      self, records: list[Record], fields: Sequence[str]
  ) -> Iterator[tuple[str, Record]]:
    for record in records:
      yield record['id'], schema.complete(record, fields)


def multiple_choice(
    rng: random.Random,
    correct: str,
    wrong: Sequence[str],
    **fields: Any,
) -> Record:
  """An MC record with `correct` shuffled among `wrong` at a seeded position."""
  choices = list(wrong)
  if correct in choices or len(set(choices)) != len(choices):
    raise ValueError(f'Choices are not distinct: {correct!r}, {choices}.')
  answer = rng.randrange(len(choices) + 1)
  choices.insert(answer, correct)
  return dict(fields, choices=choices, answer=answer)
