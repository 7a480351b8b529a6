"""Job 'score': multiple-choice probes with the model as it is (no context).

Writes <workdir>/<name>.jsonl per probe set and <workdir>/summary.json, and
prints a table of accuracies.
"""

import pathlib
from typing import Iterator

from absl import logging
import ml_collections

from icl_iwl import config_lib
from icl_iwl import runtime
from icl_iwl import tables
from icl_iwl.data import datasets
from icl_iwl.eval import probes
from icl_iwl.eval import results
from icl_iwl.eval import scoring
from icl_iwl.jobs import JOBS


def probe_sets(config: ml_collections.ConfigDict
               ) -> Iterator[tuple[str, Iterator[probes.Item], int]]:
  """(name, lazy items, count) of each probe split `config.eval` names, or of
  the built-in quickstart questions."""
  if config.eval.dataset == 'quickstart':
    yield 'quickstart', iter(probes.QUICKSTART), len(probes.QUICKSTART)
    return
  dataset = datasets.resolve(*config_lib.eval_dataset(config))
  for split in config_lib.split_list(config.eval.splits) or dataset.probe_splits():
    records, n = dataset.stream(split, config.eval.limit or None)
    yield f'{dataset.name}/{split}', map(probes.item_from_record, records), n


def _kept(scores: Iterator[scoring.ItemScore],
          into: list[scoring.ItemScore]) -> Iterator[scoring.ItemScore]:
  for s in scores:
    into.append(s)
    yield s


@JOBS.register('score')
def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[dict]:
  """Scores every probe set; returns the summary rows."""
  scorer = runtime.scorer(config, runtime.load(config))
  rows = []
  for name, items, total in probe_sets(config):
    scores = []  # Streamed to the JSONL file as they come.
    results.write_items(workdir / f'{name.replace("/", "-")}.jsonl', _kept(
        scorer.score_iter(items, total=total, progress=True), scores))
    rows.append({'probes': name, 'n': len(scores), 'chance': results.chance(scores),
                 **{f'acc_{k}': v for k, v in scoring.accuracy(scores).items()}})
    logging.info('%s: %s', name, rows[-1])
  results.write_json(workdir / 'summary.json', rows)
  table = tables.markdown_table(
      rows, ['probes', 'n', 'acc_sum', 'acc_mean', 'acc_char', 'chance'])
  (workdir / 'results.md').write_text(table + '\n')
  print(table)
  return rows
