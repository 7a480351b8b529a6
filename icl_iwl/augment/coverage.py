r"""Did augmented fine-tuning learn what the augmented data states, or more?

    python -m icl_iwl.augment.coverage --dataset=reversal_curse --config=medium \
        --augmented=jsonl/augment_reversal_curse_local_medium \
        --runs=/work/runs/lampinen_aug/reversal_curse

A fact is *newly stated* when the augmented documents state it truly in a
kind of statement (checkers.py: e.g. 'd2p, name first') that the original
training documents never use for it: on reversal_curse, a reversal the
generator wrote. Each probe names its facts; for every finished trained run
under `--runs` (its last per-item scores) and every probe split, the table
counts the probes answered right among those whose facts are newly stated
("covered") and among the rest. Augmented FT that only memorizes the
generator's sentences is right on covered probes and no better than plain
FT on the others.
"""

import collections
import json
import pathlib
from typing import Iterable, Sequence

from absl import app
from absl import flags

from icl_iwl import errors
from icl_iwl import report
from icl_iwl import tables
from icl_iwl.augment import audit
from icl_iwl.augment import checkers
from icl_iwl.augment import split
from icl_iwl.data import datasets


def statements(checker: checkers.Checker, texts: Iterable[str]) -> set[tuple[str, str]]:
  """(fact, kind) of every true statement in `texts`."""
  out = set()
  for text in texts:
    for sentence in split.sentences(text):
      claim = audit.classify(checker, sentence)
      if claim.label == checkers.TRUE and claim.fact:
        out.add((claim.fact, claim.kind))
  return out


def newly_stated(checker: checkers.Checker, original: Iterable[str],
                 augmented: Iterable[str]) -> set[str]:
  """Facts the augmented texts state truly in a kind the original texts
  never use for that fact."""
  return {fact for fact, _ in statements(checker, augmented)
          - statements(checker, original)}


def rows(runs: Sequence[pathlib.Path], probe_facts: dict[str, list[str]],
         covered: set[str]) -> list[dict]:
  """One row per run and probe split: right/all among covered probes and
  among the others (`probe_facts`: probe id -> its facts)."""
  out = []
  for run in runs:
    items = report.last_items(run)
    if items is None or not (run / report.DONE).exists():
      continue
    for path in sorted(items.glob('*.jsonl')):
      counts = collections.Counter()
      for line in path.read_text().splitlines():
        item = json.loads(line)
        group = ('covered' if set(probe_facts.get(item['id'], ())) & covered
                 else 'other')
        counts[group, 'n'] += 1
        counts[group, 'right'] += bool(item['correct_sum'])
      out.append({'run': run.name, 'split': path.stem,
                  **{g: f'{counts[g, "right"]}/{counts[g, "n"]}'
                     for g in ('covered', 'other')}})
  return out


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  if not (f.dataset and f.augmented and f.runs):
    raise errors.UserError('Give --dataset, --augmented and --runs.')
  checker = checkers.for_dataset(f.dataset, f.config)
  if checker is None:
    raise errors.UserError(f'{f.dataset} has no audit checker.')
  original = datasets.resolve(f.dataset, f.config)
  covered = newly_stated(
      checker, (r['text'] for r in original.documents('train')),
      (r['text'] for r in datasets.resolve(f.augmented).records('train')))
  probe_facts = {r['id']: list(r['facts']) for s in original.probe_splits()
                 for r in original.records(s)}
  runs = sorted(p for p in pathlib.Path(f.runs).iterdir() if p.is_dir())
  print(f'{len(covered)} facts newly stated by {f.augmented}.')
  print(tables.markdown_table(rows(runs, probe_facts, covered),
                              ['run', 'split', 'covered', 'other']))


if __name__ == '__main__':
  # Defined here, not on import: `--config` is also icl_iwl.main's flag.
  flags.DEFINE_string('dataset', None, 'The original dataset (a built-in one).')
  flags.DEFINE_string('config', 'medium', 'Its builder config.')
  flags.DEFINE_string('augmented', None, 'The augmented dataset (jsonl/<name>).')
  flags.DEFINE_string('runs', None, 'A directory of trained runs (an experiment workdir).')
  app.run(errors.main_wrapper(main))
