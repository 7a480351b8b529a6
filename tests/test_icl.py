"""ICL contexts: every item sees its facts' documents, within the budget."""

import functools

import numpy as np
import pytest

from icl_iwl.data import datasets
from icl_iwl.data import tokenizer
from icl_iwl.eval import icl
from icl_iwl.eval import probes


@functools.cache
def _data(dataset='reversals', split='test_reversal'):
  ds = datasets.resolve(dataset, 'small')
  return ds.records('train'), ds.records(split)


def test_documents_that_fit_make_one_shuffled_context():
  docs, items = _data()
  tok = tokenizer.load_default()
  plan = icl.contexts(docs, [r['facts'] for r in items], tok, icl.IclConfig(budget=4096))
  assert len(plan) == 1 and len(plan[0]) == 1
  context, members = plan[0][0]
  assert members == list(range(len(items)))
  assert all(d['text'] in context for d in docs)
  where = [context.index(d['text']) for d in docs]
  assert where != sorted(where)  # Shuffled.


@pytest.mark.parametrize('dataset, split, budget', [
    ('reversals', 'test_reversal', 256), ('semantic', 'test_deduction', 2048)])
def test_subsamples_cover_every_item_within_the_budget(dataset, split, budget):
  docs, items = _data(dataset, split)
  tok = tokenizer.load_default()
  assert sum(len(tok.encode(d['text'])) for d in docs) > budget  # Must subsample.
  config = icl.IclConfig(budget=budget, num_subsamples=3, seed=1)
  plan = icl.contexts(docs, [r['facts'] for r in items], tok, config)
  assert len(plan) == 3
  for pairs in plan:
    covered = sorted(i for _, members in pairs for i in members)
    assert covered == list(range(len(items)))  # Each item once per subsample.
    for context, members in pairs:
      assert len(tok.encode(context, add_bos=True)) <= config.budget
      for i in members:
        for fact in items[i]['facts']:
          stating = [d['text'] for d in docs if fact in d['facts']]
          assert not stating or any(t in context for t in stating), (i, fact)
  first = [c for c, _ in plan[0]]
  assert first != [c for c, _ in plan[1]]  # Subsamples differ.


def test_items_whose_documents_cannot_fit_fail_clearly():
  docs, items = _data('semantic', 'test_deduction')
  with pytest.raises(ValueError, match=r'needs \d+ tokens of documents'):
    icl.contexts(docs, [r['facts'] for r in items], tokenizer.load_default(),
                 icl.IclConfig(budget=64))


def test_accuracy_spread_over_subsamples():
  from icl_iwl.eval import scoring  # pylint: disable=g-import-not-at-top
  right = scoring.ItemScore('a', 0, (-1.0, -2.0), (1, 1), (1, 1))
  wrong = scoring.ItemScore('a', 1, (-1.0, -2.0), (1, 1), (1, 1))
  result = icl.IclResult(((right, right), (right, wrong)), 3)
  acc = result.accuracy()['sum']
  assert acc['mean'] == 0.75 and acc['min'] == 0.5 and acc['max'] == 1.0
  np.testing.assert_allclose(acc['std'], 0.25)
