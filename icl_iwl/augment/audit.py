"""The audit: is the augmented data true to the knowledge base?

Every sentence of the new documents is classified by the dataset's checker
(`checkers.py`) as stating a true fact, a false one, an undetermined one, or
none it can parse. A sentence with several statements takes the worst label
(false > undetermined > true) and that statement's kind. Rows per pass and
kind, and one row per pass over all its sentences (kind 'all'):

| pass    | kind    | sentences | true | false | undetermined | none | facts |
|---------|---------|----------:|-----:|------:|-------------:|-----:|------:|
| reverse | reverse |        90 |   81 |     9 |            0 |    0 |    77 |
| reverse | all     |       310 |   81 |     9 |            0 |  220 |    77 |

`facts` counts the distinct facts stated truly. The original documents are
audited as the pass 'original', a reference for what the checker finds.
"""

import collections
from typing import Iterable, Mapping, Sequence

from icl_iwl import tables
from icl_iwl.augment import checkers
from icl_iwl.augment import split

NONE = 'none'
LABELS = (checkers.TRUE, checkers.FALSE, checkers.UNDETERMINED, NONE)
COLUMNS = ('pass', 'kind', 'sentences', *LABELS, 'facts')
_WORST_FIRST = (checkers.FALSE, checkers.UNDETERMINED, checkers.TRUE)


def classify(checker: checkers.Checker, sentence: str) -> checkers.Claim:
  """The claim that decides `sentence`'s label (label 'none' if it has none)."""
  claims = checker.claims(sentence)
  for label in _WORST_FIRST:
    for claim in claims:
      if claim.label == label:
        return claim
  return checkers.Claim(NONE, '-')


def rows(checker: checkers.Checker, pass_name: str,
         texts: Iterable[str]) -> list[dict]:
  """The audit rows of one pass's new documents `texts`."""
  counts: dict[str, collections.Counter] = collections.defaultdict(
      collections.Counter)
  facts: dict[str, set[str]] = collections.defaultdict(set)
  for text in texts:
    for sentence in split.sentences(text):
      claim = classify(checker, sentence)
      for kind in ('all', claim.kind):
        counts[kind][claim.label] += 1
        if claim.label == checkers.TRUE and claim.fact:
          facts[kind].add(claim.fact)
  kinds = sorted(k for k in counts if k not in ('all', '-')) + ['all']
  return [{'pass': pass_name, 'kind': kind,
           'sentences': sum(counts[kind].values()),
           **{label: counts[kind][label] for label in LABELS},
           'facts': len(facts[kind])}
          for kind in kinds]


def by_pass(checker: checkers.Checker,
            texts: Mapping[str, Sequence[str]]) -> list[dict]:
  """The audit rows of every pass in `texts` (pass -> new documents)."""
  return [row for name, pass_texts in texts.items()
          for row in rows(checker, name, pass_texts)]


def table(audit_rows: Sequence[dict]) -> str:
  return tables.markdown_table(audit_rows, COLUMNS)
