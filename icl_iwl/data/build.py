r"""Build the synthetic datasets as TFDS ArrayRecord datasets.

    python -m icl_iwl.data.build --datasets=all
    python -m icl_iwl.data.build --datasets=reversals,semantic --config=small \
        --data_dir=/tmp/tfds

Datasets: reversals, syllogisms, reversal_curse, semantic, ictrain. Each is
written to <data_dir>/<name>/<config>/1.0.0 (data_dir defaults to
$ICL_IWL_DATA_DIR, else ~/.cache/icl_iwl/tfds); an existing dataset is kept
unless --overwrite. Generation is deterministic: the same config gives the
same records. A rebuild (--overwrite) replaces a dataset only once the new
one is completely written: a failed or killed build never loses data.
"""

from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds
import tqdm

from icl_iwl import errors
from icl_iwl import paths
from icl_iwl.data import builders
from icl_iwl.data import datasets

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run, so modules import cleanly)."""
  flags.DEFINE_string(
      'datasets', 'all',
      'all, or a comma-separated list of: '
      + ', '.join(builders.DATASETS.names()))
  flags.DEFINE_enum(
      'config', 'full', ['full', 'medium', 'small'],
      'full: paper-like sizes; small: a few examples, for tests.')
  flags.DEFINE_string(
      'data_dir', None, 'TFDS data dir (default: $ICL_IWL_DATA_DIR, else '
      '~/.cache/icl_iwl/tfds).')
  flags.DEFINE_bool(
      'overwrite', False, 'Regenerate datasets that already exist.')


def build(
    names: Sequence[str], config: str, data_dir: str, overwrite: bool = False
) -> list[tfds.core.DatasetBuilder]:
  """Builds each dataset of `names` at `config` with progress bars; returns
  builders that read them."""
  tfds.display_progress_bar(True)
  return [builders.base.prepare(builders.builder(name, config, data_dir),
                                overwrite=overwrite)
          for name in tqdm.tqdm(names, desc='datasets', unit='dataset')]


def selected_datasets(argv: Sequence[str]) -> list[str]:
  """The --datasets of a data command (build, describe); quiets TFDS logs.

  Raises:
    app.UsageError: on extra arguments.
    UserError: on an unknown dataset name.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens.
  return datasets.select(FLAGS.datasets)


def main(argv: Sequence[str]) -> None:
  names = selected_datasets(argv)
  if any(datasets.is_user(n) for n in names):
    raise errors.UserError('Imported datasets are written by icl_iwl.data.jsonl.')
  data_dir = FLAGS.data_dir or str(paths.data_dir())
  for builder in build(names, FLAGS.config, data_dir, FLAGS.overwrite):
    counts = ', '.join(
        f'{split} {info.num_examples}'
        for split, info in builder.info.splits.items())
    print(f'{builder.name}/{FLAGS.config}: {counts}  ({builder.data_dir})')


if __name__ == '__main__':
  define_flags()
  app.run(errors.main_wrapper(main))
