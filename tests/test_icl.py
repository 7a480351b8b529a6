"""ICL contexts: the paper's probe-blind subsamples, and the retrieval mode."""

import functools
import random
import subprocess
import sys

import numpy as np
import pytest

from icl_iwl.data import datasets
from icl_iwl.data import tokenizer
from icl_iwl.eval import icl
from icl_iwl.eval import options
from icl_iwl.eval import probes
from icl_iwl.eval import scoring


@functools.cache
def _data(dataset='reversals', split='test_reversal'):
  ds = datasets.resolve(dataset, 'small')
  return ds.records('train'), ds.records(split)


def _docs_in(context, docs):
  """Indices of the documents whose text is in `context`."""
  return {i for i, d in enumerate(docs) if d['text'] in context}


@pytest.mark.parametrize('protocol', options.PROTOCOLS)
def test_documents_that_fit_make_one_shuffled_context(protocol):
  docs, items = _data()
  tok = tokenizer.load_default()
  plan = icl.contexts(docs, [r['facts'] for r in items], tok,
                      icl.IclConfig(protocol=protocol, budget=4096))
  assert len(plan) == 1 and len(plan[0]) == 1
  context, members = plan[0][0]
  assert members == list(range(len(items)))
  assert all(d['text'] in context for d in docs)
  where = [context.index(d['text']) for d in docs]
  assert where != sorted(where)  # Shuffled.


def test_paper_contexts_do_not_look_at_the_probes_and_fill_the_budget():
  docs, items = _data('semantic', 'test_deduction')
  _, others = _data('semantic', 'test_rephrase')
  tok = tokenizer.load_default()
  config = icl.IclConfig(budget=1024, num_subsamples=4, seed=3)
  plan = icl.contexts(docs, [r['facts'] for r in items], tok, config)
  # Other probes, the same number of them: the very same contexts.
  fake = [['no-such-fact']] * len(items)
  assert icl.contexts(docs, fake, tok, config) == plan
  assert [[c for c, _ in p] for p in icl.contexts(
      docs, [r['facts'] for r in others], tok, config)] == [[c for c, _ in p] for p in plan]
  longest = max(len(tok.encode(d['text'])) for d in docs) + 2
  for pairs in plan:
    [(context, members)] = pairs  # One context with every item in it.
    assert members == list(range(len(items)))
    assert config.budget - longest < len(tok.encode(context, add_bos=True)) <= config.budget
    assert context.endswith('\n\n') and '\n\n\n' not in context
  assert len({c for [(c, _)] in plan}) == 4  # Subsamples differ.


class _RecordingScorer:
  """Stands in for `scoring.Scorer`: records each (item id, context) scored."""

  def __init__(self):
    self.tok = tokenizer.load_default()
    self.seen = []

  def score(self, items, progress=False):
    del progress
    self.seen += [(item.id, item.context) for item in items]
    return [scoring.ItemScore(item.id, item.answer, (-1.0,) * len(item.choices),
                              (1,) * len(item.choices), (1,) * len(item.choices))
            for item in items]


def test_paper_scores_every_item_in_every_subsample():
  docs, records = _data('reversal_curse', 'test_d2p_reverse')
  scorer = _RecordingScorer()
  config = icl.IclConfig(budget=300, num_subsamples=5)
  result = icl.evaluate(scorer, probes.items(records), [r['facts'] for r in records],
                        docs, config)
  assert result.protocol == 'paper' and result.num_contexts == 5
  contexts = sorted({c for _, c in scorer.seen})
  assert len(contexts) == 5
  assert sorted(scorer.seen) == sorted((r['id'], c) for r in records for c in contexts)
  assert [[s.id for s in sub] for sub in result.subsamples] == [
      [r['id'] for r in records]] * 5


_SUBPROCESS = '''
import json, sys
from icl_iwl.data import tokenizer
from icl_iwl.data import datasets
from icl_iwl.eval import icl
from icl_iwl.eval import options
docs = datasets.resolve('reversals', 'small').records('train')
config = icl.IclConfig(budget=200, num_subsamples=4, seed=7)
print(json.dumps([p[0][0] for p in icl.contexts(docs, [], tokenizer.load_default(), config)]))
'''


def test_paper_subsamples_are_a_pure_function_of_the_seed():
  docs, _ = _data()
  tok = tokenizer.load_default()

  def texts(seed, n):
    return [p[0][0] for p in icl.contexts(
        docs, [], tok, icl.IclConfig(budget=200, num_subsamples=n, seed=seed))]

  assert texts(7, 4) == texts(7, 4) and texts(7, 4) != texts(8, 4)
  assert texts(7, 6)[:4] == texts(7, 4)  # Subsample s depends on (seed, s) alone.
  # Another interpreter (another hash seed, a fresh random state): the same.
  import json  # pylint: disable=g-import-not-at-top
  random.seed(123)
  out = subprocess.run([sys.executable, '-c', _SUBPROCESS], check=True,
                       capture_output=True, text=True,
                       env={**__import__('os').environ, 'PYTHONHASHSEED': '99'})
  assert json.loads(out.stdout.strip().splitlines()[-1]) == texts(7, 4)


def _inclusion(protocol):
  """How often the documents naming an item's answer, and those naming one of
  its wrong choices (the hard distractors' sources), are in its context."""
  docs, records = _data('semantic', 'test_reversal')
  tok = tokenizer.load_default()
  config = icl.IclConfig(protocol=protocol, budget=1024, num_subsamples=48,
                         docs_per_fact=0)
  plan = icl.contexts(docs, [r['facts'] for r in records], tok, config)
  naming = lambda word: {i for i, d in enumerate(docs)  # noqa: E731
                         if any(word in f.split(':') for f in d['facts'])}
  hits = {'answer': [], 'distractor': []}
  for pairs in plan:
    for context, members in pairs:
      present = _docs_in(context, docs)
      for i in members:
        words = [c.strip(' .') for c in records[i]['choices']]
        for j, word in enumerate(words):
          kind = 'answer' if j == records[i]['answer'] else 'distractor'
          hits[kind] += [d in present for d in naming(word)]
  return {k: float(np.mean(v)) for k, v in hits.items()}, {k: len(v) for k, v in hits.items()}


def test_paper_puts_distractor_sources_in_context_as_often_as_the_answers():
  rates, counts = _inclusion('paper')
  assert min(counts.values()) > 500
  assert 0.1 < rates['answer'] < 0.5  # A subsample, not everything.
  assert abs(rates['answer'] - rates['distractor']) < 0.05, rates
  # The retrieval mode fails this: the answer's documents are always there.
  rates, _ = _inclusion('retrieval')
  assert rates['answer'] > rates['distractor'] + 0.2, rates


def test_retrieval_subsamples_cover_every_item_within_the_budget():
  for dataset, split, budget in [('reversals', 'test_reversal', 256),
                                 ('semantic', 'test_deduction', 2048)]:
    docs, items = _data(dataset, split)
    tok = tokenizer.load_default()
    assert sum(len(tok.encode(d['text'])) for d in docs) > budget  # Must subsample.
    config = icl.IclConfig(protocol='retrieval', budget=budget, num_subsamples=3,
                           seed=1)
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


def test_bad_configs_fail_clearly():
  docs, items = _data('semantic', 'test_deduction')
  tok = tokenizer.load_default()
  with pytest.raises(ValueError, match=r'needs \d+ tokens of documents'):
    icl.contexts(docs, [r['facts'] for r in items], tok,
                 icl.IclConfig(protocol='retrieval', budget=64))
  with pytest.raises(ValueError, match="Unknown ICL protocol 'oracle'"):
    icl.contexts(docs, [], tok, icl.IclConfig(protocol='oracle'))


def test_accuracy_spread_over_subsamples():
  right = scoring.ItemScore('a', 0, (-1.0, -2.0), (1, 1), (1, 1))
  wrong = scoring.ItemScore('a', 1, (-1.0, -2.0), (1, 1), (1, 1))
  result = icl.IclResult(((right, right), (right, wrong)), 3, 'paper')
  acc = result.accuracy()['sum']
  assert acc['mean'] == 0.75 and acc['min'] == 0.5 and acc['max'] == 1.0
  np.testing.assert_allclose(acc['std'], 0.25)
