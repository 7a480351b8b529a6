r"""Print statistics of datasets: examples, chance and token lengths per split.

    python -m icl_iwl.data.describe --datasets=all [--config=full|small] \
        [--data_dir=...] [--prior=embedded]
    python -m icl_iwl.data.describe --datasets=jsonl/mydata

Datasets not built yet are built first. Token lengths are under the Gemma 3
tokenizer, without BOS, of each record's full text: a document's text, a task
pair rendered as `Input: ...\nOutput: <output>`, a probe's prompt followed by
its correct choice. `chance` is the accuracy of guessing uniformly among each
probe's choices. With --prior=CHECKPOINT (e.g. 'embedded', the pretrained
Gemma 3 270M), every probe split is also scored by that model with nothing in
context: the `prior` column is what the model's word preferences alone get,
the baseline that learning has to beat (above chance means the probe can be
partly solved without the facts).
"""

import dataclasses
import statistics
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from icl_iwl import errors
from icl_iwl import paths
from icl_iwl import tables
from icl_iwl.data import build
from icl_iwl.data import builders
from icl_iwl.data import datasets
from icl_iwl.data import schema
from icl_iwl.data import tokenizer as tokenizer_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run, so modules import cleanly)."""
  flags.DEFINE_string(
      'datasets', 'all', 'all, a comma-separated list of: '
      + ', '.join(builders.DATASETS.names()) + ', or jsonl/<name> entries.')
  flags.DEFINE_enum(
      'config', 'full', ['full', 'medium', 'small'], 'Config of the synthetic datasets.')
  flags.DEFINE_string(
      'data_dir', None, 'TFDS data dir (default: $ICL_IWL_DATA_DIR).')
  flags.DEFINE_string(
      'prior', '', "Score the probes with this checkpoint (e.g. 'embedded') and "
      'nothing in context: the prior-only baseline column. Default: off.')


@dataclasses.dataclass(frozen=True)
class SplitStats:
  dataset: str
  version: str
  split: str
  examples: int
  choices: str  # e.g. '4', '1-4', or '-' for documents and pairs.
  chance: float | None  # Mean of 1 / choices, for probe splits.
  min_tokens: int
  mean_tokens: float
  max_tokens: int
  prior: float | None = None  # Accuracy of a model with no context.


def record_text(record: dict[str, Any]) -> str:
  """The full text of a decoded record, as a model would read it."""
  if record.get('choices'):
    return record['prompt'] + record['choices'][record['answer']]
  if record.get('input'):
    prompt = schema.render_context_prompt([], [], record['input'])
    return prompt + schema.render_answer(record['output'])
  return record['text']


def split_stats(dataset: str, version: str, split: str,
                records: Sequence[dict[str, Any]],
                tokenizer: tokenizer_lib.Tokenizer) -> SplitStats:
  """Counts, chance and token lengths of one split's decoded records."""
  lengths = [len(ids) for ids in
             tokenizer.encode_batch([record_text(r) for r in records])]
  counts = sorted({len(r['choices']) for r in records if r.get('choices')})
  choices = '-' if not counts else (
      str(counts[0]) if len(counts) == 1 else f'{counts[0]}-{counts[-1]}')
  chance = statistics.fmean(1 / len(r['choices']) for r in records) if counts else None
  return SplitStats(dataset, version, split, len(records), choices, chance,
                    min(lengths), statistics.fmean(lengths), max(lengths))


def describe(names: Sequence[str], config: str, data_dir: str,
             tokenizer: tokenizer_lib.Tokenizer,
             prior: Callable[[list[dict[str, Any]]], float] | None = None,
             ) -> list[SplitStats]:
  """Statistics of every split of each dataset (built first if needed);
  `prior(records)`, if given, scores each probe split."""
  rows = []
  for name in names:
    dataset = datasets.resolve(name, config, data_dir)
    version = str(dataset.builder.info.version)
    for split in dataset.splits():
      records = dataset.records(split)
      row = split_stats(dataset.label, version, split, records, tokenizer)
      if prior is not None and row.chance is not None:
        row = dataclasses.replace(row, prior=prior(records))
      rows.append(row)
  return rows


def prior_scorer(checkpoint: str) -> Callable[[list[dict[str, Any]]], float]:
  """Accuracy (summed log-likelihood) of `checkpoint` on probe records with
  nothing in context."""
  # pylint: disable=g-import-not-at-top
  from icl_iwl import config_lib
  from icl_iwl import runtime
  from icl_iwl.eval import probes
  from icl_iwl.eval import scoring
  # pylint: enable=g-import-not-at-top
  config = config_lib.base('score')
  config.model.checkpoint = checkpoint
  config.scorer = config_lib.scorer()
  config_lib.validate(config)
  scorer = runtime.scorer(config, runtime.load(config))
  return lambda records: scoring.accuracy(
      scorer.score(probes.items(records), progress=True))['sum']


def format_table(rows: Sequence[SplitStats]) -> str:
  """A Markdown table of `rows`."""
  columns = ['dataset', 'version', 'split', 'examples', 'choices', 'chance',
             'tokens min', 'tokens mean', 'tokens max']
  if any(r.prior is not None for r in rows):
    columns.insert(6, 'prior')
  return tables.markdown_table(
      [{'dataset': r.dataset, 'version': r.version, 'split': r.split,
        'examples': r.examples, 'choices': r.choices,
        'chance': '-' if r.chance is None else f'{r.chance:.3f}',
        'prior': '-' if r.prior is None else f'{r.prior:.3f}',
        'tokens min': r.min_tokens, 'tokens mean': round(r.mean_tokens, 1),
        'tokens max': r.max_tokens} for r in rows], columns, digits=1)


def main(argv: Sequence[str]) -> None:
  names = build.selected_datasets(argv)
  tfds.disable_progress_bar()
  rows = describe(names, FLAGS.config, FLAGS.data_dir or str(paths.data_dir()),
                  tokenizer_lib.load_default(),
                  prior_scorer(FLAGS.prior) if FLAGS.prior else None)
  print(format_table(rows))


if __name__ == '__main__':
  define_flags()
  app.run(errors.main_wrapper(main))
