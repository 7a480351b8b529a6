"""The real Gemma 3 270M: our GGUF path vs transformers' own GGUF load.

Memory (the suite must stay under 10 GB): each model is loaded once for the
whole suite (conftest's `real_rt` and `real_reference`: torch float32 and
ours, ~1.1 GB each, ours on one device), scorers run on a one-device mesh
(the 8 fake test devices would hold 8 replicas), logits are compared 128
positions at a time and the reference computes logits only where they are
compared.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_iwl.data import datasets
from icl_iwl.eval import packing
from icl_iwl.eval import probes
from icl_iwl.eval import scoring
from icl_iwl.model import cache

pytestmark = pytest.mark.real_model

_TEXT = """\
The lighthouse keeper had kept a log for forty-one years. Every evening at
dusk he wrote the wind direction, the state of the sea, and the number of
ships that passed the point. Most entries were short: "NW 4, slight swell,
3 ships." Some were longer, when a storm came through in November and the
lamp had to be tended all night, or when a trawler ran aground on the bar
and the lifeboat crew stayed in the kitchen until morning, drinking tea and
arguing about football. In 1987 the light was automated, and the log ends
with a single line: "Last watch. Lamp good. Going home."

def fibonacci(n: int) -> list[int]:
    a, b = 0, 1
    out = []
    for _ in range(n):
        out.append(a)
        a, b = b, a + b
    return out

Prices rose 3.7% in the year to March, against 2.9% expected; the central
bank held its rate at 4.25%. Café owners in Zürich said the cost of milk was
up by a fifth. 東京の天気は晴れ。 Ελληνικά κείμενα. Emoji: 🌊🚢⚓.

Femp are more dangerous than glon. Glon are less dangerous than femp. All
troff are yomp; some yomp are not glon. Which of these follow? A careful
reader would say that nothing follows about troff and glon, because the
premises share no middle term in the right position. Syllogisms like this
are easy to write and surprisingly hard to judge at a glance, which is why
logicians drew diagrams of overlapping circles to check them.

The committee met again on Thursday. The chair opened with the minutes,
which were approved without comment, and then turned to the budget. The
treasurer explained that the roof repairs had cost more than planned, that
the grant from the county had arrived late, and that the reserve would
cover the gap this year but not the next. Several members asked whether the
summer fair could be moved to the larger field, where there was room for
more stalls; others worried about parking and the state of the lane after
rain. In the end they agreed to ask the farmer, to price a marquee, and to
meet again in a month with figures. The meeting closed at nine.

Recipe for a plain loaf: 500 g strong white flour, 10 g salt, 7 g dried
yeast, 320 ml warm water. Mix, knead for ten minutes until smooth, leave
covered for an hour or until doubled, knock back, shape, prove for another
forty minutes, then bake at 220 C for 30-35 minutes. The loaf is done when
it sounds hollow if tapped underneath. Let it cool on a rack before cutting,
or the crumb will be gummy. Variations: replace a fifth of the flour with
wholemeal; add a handful of seeds; brush with milk for a softer crust.

| year | rainfall (mm) | sunny days |
|------|---------------|------------|
| 2019 | 812           | 143        |
| 2020 | 765           | 161        |
| 2021 | 901           | 128        |
"""


def test_logits_match_transformers_gguf_load(real_rt, real_reference):
  import torch  # pylint: disable=g-import-not-at-top

  model, params, reference = real_rt.model, real_rt.params, real_reference
  tokens = real_rt.tok.encode(_TEXT, add_bos=True)
  length = len(tokens)
  assert 600 < length < 1024, length  # Past the 512 sliding window.
  assert reference.config.final_logit_softcapping is None  # Logits = lm_head(h).
  with torch.inference_mode():
    expected_hidden = reference.model(torch.tensor([tokens]), use_cache=False
                                      ).last_hidden_state[0]
  hidden, _ = jax.jit(lambda p, t: model.apply(
      {'params': p}, t, jnp.arange(length)[None],
      cache.causal_mask(jnp.ones((1, length), jnp.int32)), return_hidden=True))(
          params, jnp.asarray([tokens]))
  logits = jax.jit(lambda p, h: model.apply({'params': p}, h, method=model.logits))
  diff = []  # Per position: max |ours - reference| over the vocabulary.
  for start in range(0, length, 128):  # [128, V] at a time: 134 MB, not 0.7 GB.
    with torch.inference_mode():
      expected = reference.lm_head(expected_hidden[start:start + 128]).numpy()
    got = np.asarray(logits(params, hidden[0, start:start + 128]))
    diff.append(np.abs(got - expected).max(-1))
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
  diff = np.concatenate(diff)
  # On a 2-core Xeon (avx512): max 1.4e-4 over the 753 positions, median
  # 3.6e-5 (logits of magnitude ~22); the export test allows 5e-4 too.
  assert np.median(diff) <= 1e-4, np.median(diff)
  assert diff.max() <= 5e-4, diff.max()
  assert diff[512:].max() <= 5e-4  # Positions past the sliding window.


_PROBE_DATASETS = ('reversals', 'syllogisms', 'reversal_curse', 'semantic', 'ictrain')


def _probe_items(per_split: int = 1) -> list:
  items = []
  for dataset in _PROBE_DATASETS:
    ds = datasets.resolve(dataset, 'small')
    for split in ds.probe_splits():
      items += probes.items(ds.records(split, per_split))
  return items


def _torch_logprobs(reference, tok, item) -> list[float]:
  """Full f32 forward of [BOS] + context + prompt + choice; log_softmax; gather.

  The log_softmax runs in float64: torch's f32 log_softmax over 262k logits
  is biased by ~6e-5 per token against the exact value (JAX's is within
  1e-7), which over a 16-token choice alone would use up the tolerance.
  """
  import torch  # pylint: disable=g-import-not-at-top

  prefix = tok.encode(item.context, add_bos=True) + tok.encode(item.prompt.rstrip())
  choices = [tok.encode(c) for c in packing.choice_texts(item)]
  width = len(prefix) + max(map(len, choices))
  batch = [prefix + ids + [0] * (width - len(prefix) - len(ids)) for ids in choices]
  # Logits only at the positions that predict a choice token (the model's own
  # `logits_to_keep`): [choices, longest choice, V], not [choices, width, V].
  keep = torch.arange(len(prefix) - 1, width - 1)
  with torch.inference_mode():  # Right padding: causal, so it changes nothing before.
    logits = reference(torch.tensor(batch), logits_to_keep=keep).logits
  out = []
  for row, ids in enumerate(choices):
    rows = logits[row, :len(ids)].double()
    logp = torch.log_softmax(rows, -1)
    out.append(float(sum(logp[k, t] for k, t in enumerate(ids))))
  return out


def test_scorer_matches_a_straightforward_reference_on_every_probe_type(real_rt,
                                                                       real_reference):
  model, params, tok = real_rt.model, real_rt.params, real_rt.tok
  items = _probe_items()
  assert len(items) == 18  # One of every probe split of the five datasets.
  scorer = scoring.Scorer(model, params, tok, scoring.ScorerConfig(buckets=(256,)),
                          real_rt.mesh)
  scores = scorer.score(items)
  worst = 0.0
  for item, score in zip(items, scores):
    expected = _torch_logprobs(real_reference, tok, item)
    worst = max(worst, float(np.abs(np.asarray(score.logprob) - expected).max()))
  assert worst <= 1e-3, worst


def test_shared_context_matches_the_reference(real_rt, real_reference):
  """The context encoded once in chunks, its items scored against it (the
  unshared path equals this on tiny models: test_scoring)."""
  model, params, tok = real_rt.model, real_rt.params, real_rt.tok
  reversals = datasets.resolve('reversals', 'small')
  documents = reversals.records('train')
  context = '\n\n'.join(d['text'] for d in documents[:12]) + '\n\n'
  items = [dataclasses.replace(i, context=context)
           for i in probes.items(reversals.records('test_reversal', 2))]
  cached = scoring.Scorer(model, params, tok, scoring.ScorerConfig(context_chunk=128),
                          real_rt.mesh)
  assert len(tok.encode(context)) > 128  # Several chunks.
  for item, score in zip(items, cached.score(items)):
    np.testing.assert_allclose(score.logprob, _torch_logprobs(real_reference, tok, item),
                               atol=1e-3, rtol=0)
