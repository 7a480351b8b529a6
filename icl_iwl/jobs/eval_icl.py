"""Job 'eval_icl': each probe split with no context and with the training
documents in context (see eval/icl.py), for one dataset.

IC-Train probes carry their own context examples: their baseline is the
target input alone, their ICL condition the prompt with its examples.

Writes <workdir>/<split>-{baseline,icl}.jsonl, summary.json and results.md.
A split's row is kept in <split>-row.json once it is scored, so a rerun in
the same workdir (same config, see workdir.claim) scores only the splits a
killed run had not finished.
"""

import dataclasses
import json
import pathlib

from absl import logging
import ml_collections
import numpy as np

from icl_iwl import config_lib
from icl_iwl import runtime
from icl_iwl import tables
from icl_iwl.data import datasets
from icl_iwl.data import schema
from icl_iwl.eval import icl
from icl_iwl.eval import probes
from icl_iwl.eval import results
from icl_iwl.eval import scoring
from icl_iwl.jobs import JOBS

COLUMNS = ('split', 'n', 'chance', 'baseline', 'icl', 'icl_std', 'icl_min',
           'icl_max', 'protocol', 'contexts', 'baseline_char', 'icl_char')
KIND_COLUMNS = ('split', 'kind', 'n', 'baseline_logprob', 'icl_logprob')


def by_kind(records: list[dict], baseline: list[scoring.ItemScore],
            outcome: icl.IclResult, split: str) -> list[dict]:
  """Mean log-likelihood of the single choice per item kind, both ways.

  For splits whose items have one choice each (syllogisms' test_statements:
  true / false / undetermined statements), where accuracy means nothing: a
  model that has learned the premises gives true statements a higher
  log-likelihood than false ones. ICL values average the subsamples.
  """
  rows = []
  for kind in sorted({r['kind'] for r in records}):
    idx = [i for i, r in enumerate(records) if r['kind'] == kind]
    icl_lp = [sub[i].logprob[0] for sub in outcome.subsamples for i in idx]
    rows.append({'split': split, 'kind': kind, 'n': len(idx),
                 'baseline_logprob': float(np.mean([baseline[i].logprob[0] for i in idx])),
                 'icl_logprob': float(np.mean(icl_lp))})
  return rows


def _baseline(record: dict) -> probes.Item:
  """The probe with no context at all."""
  item = probes.item_from_record(record)
  if record.get('context_inputs'):
    prompt = schema.render_context_prompt([], [], record['input'])
    item = dataclasses.replace(item, prompt=prompt)
  return item


def evaluate_split(scorer: scoring.Scorer, records: list[dict], documents: list[dict],
                   config: icl.IclConfig, workdir: pathlib.Path, split: str
                   ) -> tuple[dict, list[dict]]:
  """Scores one split both ways; writes per-item files.

  Returns:
    (its accuracy row, its by-kind log-likelihood rows if every item has a
    single choice, else []).
  """
  baseline = scorer.score([_baseline(r) for r in records], progress=True)
  results.write_items(workdir / f'{split}-baseline.jsonl', baseline)
  items = probes.items(records)
  if documents:
    outcome = icl.evaluate(scorer, items, [r['facts'] for r in records],
                           documents, config, progress=True)
  else:  # The prompts hold their own context examples.
    outcome = icl.IclResult((tuple(scorer.score(items, progress=True)),),
                            len(items), 'in_prompt')
  for k, scores in enumerate(outcome.subsamples):
    results.write_items(workdir / f'{split}-icl.jsonl' if k == 0 else
                        workdir / f'{split}-icl-{k}.jsonl', scores,
                        {'subsample': k, 'protocol': outcome.protocol})
  acc, base = outcome.accuracy(), scoring.accuracy(baseline)
  single = all(len(r['choices']) == 1 for r in records)
  kinds = by_kind(records, baseline, outcome, split) if single else []
  return {
      'split': split, 'n': len(records), 'chance': results.chance(baseline),
      'baseline': base['sum'], 'icl': acc['sum']['mean'], 'icl_std': acc['sum']['std'],
      'icl_min': acc['sum']['min'], 'icl_max': acc['sum']['max'],
      'protocol': outcome.protocol, 'contexts': outcome.num_contexts,
      'baseline_char': base['char'],
      'icl_char': acc['char']['mean'],
  }, kinds


@JOBS.register('eval_icl')
def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[dict]:
  """Evaluates the probe splits of `config.eval`; returns the table rows."""
  dataset = datasets.resolve(*config_lib.eval_dataset(config))
  scorer = runtime.scorer(config, runtime.load(config))
  documents = dataset.documents()
  rows, kind_rows = [], []
  for split in config_lib.split_list(config.eval.splits) or dataset.probe_splits():
    done = workdir / f'{split}-row.json'
    if done.is_file():
      saved = json.loads(done.read_text())
      row, kinds = saved['row'], saved['kinds']
      logging.info('%s: scored by an earlier run in this workdir (%s)', split, done)
    else:
      records = dataset.records(split, config.eval.limit or None)
      row, kinds = evaluate_split(scorer, records, documents,
                                  icl.IclConfig(**config.icl), workdir, split)
      results.write_json(done, {'row': row, 'kinds': kinds})
    rows.append(row)
    kind_rows.extend(kinds)
    logging.info('%s %s', row, kinds)
  results.write_json(workdir / 'summary.json', {'splits': rows, 'kinds': kind_rows})
  table = tables.markdown_table(rows, COLUMNS)
  if kind_rows:
    table += ('\n\nSingle-choice splits (accuracy is 1 by construction): mean '
              'log-likelihood of the statement by kind\n\n'
              + tables.markdown_table(kind_rows, KIND_COLUMNS))
  header = (f'# {dataset.label}: {config.model.preset} '
            f'({config.model.checkpoint}), accuracy by summed log-likelihood\n\n')
  (workdir / 'results.md').write_text(header + table + '\n')
  print(header + table)
  return rows
