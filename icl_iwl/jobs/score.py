"""Job 'score': multiple-choice probes with the model as it is (no context).

Writes <workdir>/<name>.jsonl per probe set and <workdir>/summary.json, and
prints a table of accuracies.
"""

import pathlib

from absl import logging
import ml_collections

from icl_iwl.eval import probes
from icl_iwl.eval import results
from icl_iwl.eval import scoring
from icl_iwl.jobs import JOBS
from icl_iwl.jobs import common


def probe_sets(spec: str, config: str) -> dict[str, list[probes.Item]]:
  """'quickstart', or 'dataset' / 'dataset:split' entries, comma-separated."""
  if spec == 'quickstart':
    return {'quickstart': list(probes.QUICKSTART)}
  sets = {}
  for entry in spec.split(','):
    dataset, _, split = entry.strip().partition(':')
    for s in [split] if split else probes.probe_splits(dataset, config):
      sets[f'{dataset}/{s}'] = probes.items(probes.load_records(dataset, s, config))
  return sets


@JOBS.register('score')
def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[dict]:
  """Scores every probe set; returns the summary rows."""
  env = common.setup(config)
  scorer = scoring.Scorer(env.model, env.params, env.tok,
                          scoring.ScorerConfig(**config.scorer), env.mesh, env.rules)
  rows = []
  for name, items in probe_sets(config.probes, config.data_config).items():
    scores = scorer.score(items, progress=True)
    results.write_items(workdir / f'{name.replace("/", "-")}.jsonl', scores)
    rows.append({'probes': name, 'n': len(scores), 'chance': results.chance(scores),
                 **{f'acc_{k}': v for k, v in scoring.accuracy(scores).items()}})
    logging.info('%s: %s', name, rows[-1])
  results.write_json(workdir / 'summary.json', rows)
  table = results.markdown_table(
      rows, ['probes', 'n', 'acc_sum', 'acc_mean', 'acc_char', 'chance'])
  (workdir / 'results.md').write_text(table + '\n')
  print(table)
  return rows
