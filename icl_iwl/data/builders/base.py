"""What every builder shares: seeded configs and one pure generator.

A dataset module defines `generate(config) -> {split: [record, ...]}`, a pure
function of its config (and so of its seed), plus a `RecordBuilder` subclass
naming the record kinds it holds. The builder only writes what `generate`
returns, in TFDS's ArrayRecord format, so it reads back with
`tfds.data_source` / `builder.as_data_source()` and no TensorFlow.
"""

import abc
import dataclasses
import random
import tempfile
from typing import Any, Iterator, Sequence

import tensorflow_datasets as tfds

from icl_iwl.data import schema

Record = dict[str, Any]
Splits = dict[str, list[Record]]

FILE_FORMAT = 'array_record'


@dataclasses.dataclass(eq=False)
class GeneratorConfig(tfds.core.BuilderConfig):
  """A builder config with the seed of its generator."""

  seed: int = 0


def prepare(builder: tfds.core.DatasetBuilder, overwrite: bool = False) -> None:
  """Writes `builder`'s dataset unless it exists (or always, if `overwrite`).

  TFDS writes into a temporary `incomplete.*` directory and renames it when
  done, deleting it on any exception; downloads go to a temporary directory,
  so a failed build leaves nothing in the data dir.
  """
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  with tempfile.TemporaryDirectory() as downloads:
    builder.download_and_prepare(
        download_dir=downloads,
        download_config=tfds.download.DownloadConfig(download_mode=mode),
    )


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
    return {
        split: self._generate_examples(records, fields)
        for split, records in self.generate(self.builder_config).items()
    }

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
