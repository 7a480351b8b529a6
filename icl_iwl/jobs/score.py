"""Job 'score': multiple-choice probes with the model as it is (no context).

Writes <workdir>/<name>.jsonl per probe set and <workdir>/summary.json, and
prints a table of accuracies.
"""

import pathlib
from typing import Iterator

from absl import logging
import ml_collections

from icl_iwl import tables
from icl_iwl.eval import probes
from icl_iwl.eval import results
from icl_iwl.eval import scoring
from icl_iwl.jobs import JOBS
from icl_iwl.jobs import common


def probe_sets(spec: str, config: str, limit: int | None = None,
               ) -> Iterator[tuple[str, Iterator[probes.Item], int]]:
  """(name, lazy items, count) of 'quickstart' or of comma-separated
  'dataset' / 'dataset:split' entries."""
  if spec == 'quickstart':
    yield 'quickstart', iter(probes.QUICKSTART), len(probes.QUICKSTART)
    return
  for entry in spec.split(','):
    dataset, _, split = entry.strip().partition(':')
    for s in [split] if split else probes.probe_splits(dataset, config):
      yield (f'{dataset}/{s}', *probes.stream_items(dataset, s, config, limit))


def _kept(scores: Iterator[scoring.ItemScore],
          into: list[scoring.ItemScore]) -> Iterator[scoring.ItemScore]:
  for s in scores:
    into.append(s)
    yield s


@JOBS.register('score')
def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[dict]:
  """Scores every probe set; returns the summary rows."""
  env = common.setup(config)
  scorer = scoring.Scorer(env.model, env.params, env.tok,
                          scoring.ScorerConfig(**config.scorer), env.mesh, env.rules)
  rows = []
  for name, items, total in probe_sets(config.probes, config.data_config,
                                       config.limit or None):
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
