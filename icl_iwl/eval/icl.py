"""In-context evaluation: training documents in the context, then the probes.

Two protocols (`IclConfig.protocol`); both put all documents in one shuffled
context when they fit the budget, and differ when they do not:

  paper      Lampinen et al. 2025: `num_subsamples` contexts chosen without
             looking at the probes. Subsample s holds the longest prefix of a
             random permutation of the documents (seeded by (seed, s) alone)
             that fits the budget: a random ~budget/total share of them (with
             the 4096-token default, ~1/8 of reversals, ~1/7 of
             reversal_curse, ~1/55 of semantic). Every item is scored in every
             subsample, so the documents behind a hard distractor are in
             context exactly as often as the answer's.
  retrieval  each subsample partitions the items into groups; a group's
             context holds the documents stating its items' facts (at most
             `docs_per_fact` per fact) plus random other documents up to the
             budget, shuffled. The answer's documents are always there, the
             distractors' mostly not: a retrieval cue the paper's design
             removes, kept for comparison.

Accuracy is reported per subsample, then as mean and spread over subsamples.
"""

import dataclasses
import random
from typing import Any, Mapping, Sequence

import numpy as np

from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.eval import scoring
from icl_iwl.eval.options import IclConfig
from icl_iwl.eval.packing import Item


@dataclasses.dataclass(frozen=True)
class IclResult:
  """Scores per subsample (each a full list of item scores, in item order).

  num_contexts: distinct contexts scored; protocol: the `IclConfig.protocol`
  that made them (or how else the items got their context).
  """

  subsamples: tuple[tuple[scoring.ItemScore, ...], ...]
  num_contexts: int
  protocol: str

  def accuracy(self) -> dict[str, dict[str, float]]:
    """{rule: {'mean', 'std', 'min', 'max'}} of per-subsample accuracy."""
    per = [scoring.accuracy(s) for s in self.subsamples]
    out = {}
    for rule in scoring.RULES:
      values = np.array([p[rule] for p in per if rule in p])
      if values.size:
        out[rule] = {'mean': float(values.mean()), 'std': float(values.std()),
                     'min': float(values.min()), 'max': float(values.max())}
    return out


def _context(docs: Sequence[str], config: IclConfig) -> str:
  return config.template.format(documents=config.separator.join(docs))


def contexts(documents: Sequence[Mapping[str, Any]], item_facts: Sequence[Sequence[str]],
             tok: tokenizer_lib.Tokenizer, config: IclConfig,
             ) -> list[list[tuple[str, list[int]]]]:
  """Per subsample, the (context, item indices) pairs that cover every item.

  Args:
    documents: records with 'text' and 'facts'.
    item_facts: the fact ids each item is about (read by 'retrieval' only;
      'paper' looks at nothing but how many items there are).
    tok: to measure token lengths.
    config: see IclConfig.

  Raises:
    ValueError: with 'retrieval', if one item's own documents do not fit the
      budget.
  """
  texts = [d['text'] for d in documents]
  overhead = len(tok.encode(_context([], config), add_bos=True))
  sep = len(tok.encode(config.separator))
  lengths = [len(ids) + sep for ids in tok.encode_batch(texts)]
  everything = list(range(len(item_facts)))
  if overhead + sum(lengths) <= config.budget:
    order = list(range(len(texts)))
    random.Random(config.seed).shuffle(order)
    return [[(_context([texts[i] for i in order], config), everything)]]
  if config.protocol == 'paper':
    return [[(ctx, everything)] for ctx in _paper(texts, lengths, overhead, tok, config)]
  return _retrieval(documents, item_facts, lengths, overhead, config)


def _paper(texts: Sequence[str], lengths: Sequence[int], overhead: int,
           tok: tokenizer_lib.Tokenizer, config: IclConfig) -> list[str]:
  """Subsample s: the longest prefix of a permutation seeded by (seed, s)
  whose context fits the budget (counted per document, then checked whole)."""
  out = []
  for s in range(config.num_subsamples):
    order = random.Random(f'{config.seed}:{s}').sample(range(len(texts)), len(texts))
    used, n = overhead, 0
    while n < len(order) and used + lengths[order[n]] <= config.budget:
      used += lengths[order[n]]
      n += 1
    # Tokens may merge across a join: drop documents until the whole fits.
    while n and len(tok.encode(_context([texts[d] for d in order[:n]], config),
                               add_bos=True)) > config.budget:
      n -= 1
    out.append(_context([texts[d] for d in order[:n]], config))
  return out


def _retrieval(documents: Sequence[Mapping[str, Any]],
               item_facts: Sequence[Sequence[str]], lengths: Sequence[int],
               overhead: int, config: IclConfig
               ) -> list[list[tuple[str, list[int]]]]:
  """Groups of items with their facts' documents plus random fill."""
  texts = [d['text'] for d in documents]
  everything = list(range(len(item_facts)))
  stating: dict[str, list[int]] = {}
  for i, d in enumerate(documents):
    for fact in d['facts']:
      stating.setdefault(fact, []).append(i)
  limit = int(config.relevant_fraction * (config.budget - overhead))
  subsamples = []
  for s in range(config.num_subsamples):
    rng = random.Random(f'{config.seed}:{s}')
    chosen = {f: rng.sample(ds, min(len(ds), config.docs_per_fact or len(ds)))
              for f, ds in sorted(stating.items())}
    # Items about the same facts go together (fewer contexts to encode):
    # each joins the group its documents add least to, if they fit.
    groups: list[tuple[set[int], list[int]]] = []
    keys = {i: (sorted(item_facts[i]), rng.random()) for i in everything}
    for i in sorted(everything, key=keys.__getitem__):
      own = {d for f in item_facts[i] for d in chosen.get(f, [])}
      if sum(lengths[d] for d in own) > limit:
        raise ValueError(
            f'Item {i} needs {sum(lengths[d] for d in own)} tokens of documents '
            f'but a group may use {limit} (budget {config.budget}); raise the '
            'budget or lower docs_per_fact.')
      cost = {g: sum(lengths[d] for d in own - docs) for g, (docs, _) in enumerate(groups)
              if sum(lengths[d] for d in docs | own) <= limit}
      if cost:
        g = min(cost, key=cost.get)
        groups[g][0].update(own)
        groups[g][1].append(i)
      else:
        groups.append((own, [i]))
    pairs = []
    for own, members in groups:
      docs, used = sorted(own), sum(lengths[d] for d in own) + overhead
      for d in rng.sample(range(len(texts)), len(texts)):
        if d not in own and used + lengths[d] <= config.budget:
          docs.append(d)
          used += lengths[d]
      rng.shuffle(docs)
      pairs.append((_context([texts[d] for d in docs], config), sorted(members)))
    subsamples.append(pairs)
  return subsamples


def evaluate(scorer: scoring.Scorer, items: Sequence[Item],
             item_facts: Sequence[Sequence[str]],
             documents: Sequence[Mapping[str, Any]], config: IclConfig,
             progress: bool = False) -> IclResult:
  """Scores `items` with training documents in context (see module doc)."""
  plan = contexts(documents, item_facts, scorer.tok, config)
  batch = [dataclasses.replace(items[i], context=ctx)
           for pairs in plan for ctx, members in pairs for i in members]
  scores = iter(scorer.score(batch, progress=progress))
  subsamples = []
  for pairs in plan:
    by_item = {i: next(scores) for _, members in pairs for i in members}
    subsamples.append(tuple(by_item[i] for i in range(len(items))))
  return IclResult(tuple(subsamples), sum(len(p) for p in plan), config.protocol)
