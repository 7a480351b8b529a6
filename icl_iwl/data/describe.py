r"""Print statistics of datasets: examples and token lengths per split.

    python -m icl_iwl.data.describe --datasets=all [--config=full|small] \
        [--data_dir=...]
    python -m icl_iwl.data.describe --datasets=jsonl/mydata

Datasets not built yet are built first. Token lengths are under the Gemma 3
tokenizer, without BOS, of each record's full text: a document's text, a task
pair rendered as `Input: ...\nOutput: <output>`, a probe's prompt followed by
its correct choice.
"""

import dataclasses
import statistics
from typing import Any, Sequence

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
      'config', 'full', ['full', 'small'], 'Config of the synthetic datasets.')
  flags.DEFINE_string(
      'data_dir', None, 'TFDS data dir (default: $ICL_IWL_DATA_DIR).')


@dataclasses.dataclass(frozen=True)
class SplitStats:
  dataset: str
  split: str
  examples: int
  choices: str  # e.g. '4', '1-4', or '-' for documents and pairs.
  min_tokens: int
  mean_tokens: float
  max_tokens: int


def record_text(record: dict[str, Any]) -> str:
  """The full text of a decoded record, as a model would read it."""
  if record.get('choices'):
    return record['prompt'] + record['choices'][record['answer']]
  if record.get('input'):
    prompt = schema.render_context_prompt([], [], record['input'])
    return prompt + schema.render_answer(record['output'])
  return record['text']


def split_stats(dataset: str, split: str, records: Sequence[dict[str, Any]],
                tokenizer: tokenizer_lib.Tokenizer) -> SplitStats:
  """Counts and token lengths of one split's decoded records."""
  lengths = [len(ids) for ids in
             tokenizer.encode_batch([record_text(r) for r in records])]
  counts = sorted({len(r['choices']) for r in records if r.get('choices')})
  choices = '-' if not counts else (
      str(counts[0]) if len(counts) == 1 else f'{counts[0]}-{counts[-1]}')
  return SplitStats(dataset, split, len(records), choices, min(lengths),
                    statistics.fmean(lengths), max(lengths))


def describe(names: Sequence[str], config: str, data_dir: str,
             tokenizer: tokenizer_lib.Tokenizer) -> list[SplitStats]:
  """Statistics of every split of each dataset (built first if needed)."""
  rows = []
  for name in names:
    dataset = datasets.resolve(name, config, data_dir)
    for split in dataset.splits():
      rows.append(split_stats(dataset.label, split, dataset.records(split),
                              tokenizer))
  return rows


def format_table(rows: Sequence[SplitStats]) -> str:
  """A Markdown table of `rows`."""
  return tables.markdown_table(
      [{'dataset': r.dataset, 'split': r.split, 'examples': r.examples,
        'choices': r.choices, 'tokens min': r.min_tokens,
        'tokens mean': round(r.mean_tokens, 1), 'tokens max': r.max_tokens}
       for r in rows],
      ('dataset', 'split', 'examples', 'choices', 'tokens min', 'tokens mean',
       'tokens max'), digits=1)


def main(argv: Sequence[str]) -> None:
  names = build.selected_datasets(argv)
  tfds.disable_progress_bar()
  rows = describe(names, FLAGS.config, FLAGS.data_dir or str(paths.data_dir()),
                  tokenizer_lib.load_default())
  print(format_table(rows))


if __name__ == '__main__':
  define_flags()
  app.run(errors.main_wrapper(main))
