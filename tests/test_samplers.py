"""Retrieval indexes and embeddings.

Every invariant is computed here from the records themselves (words, tasks,
outputs), not read back from the code under test.
"""

import hashlib

import jax
import ml_collections
import numpy as np
import pytest

from icl_iwl.data import embedding
from icl_iwl.data import retrieval
from icl_iwl.data import tokenizer
from icl_iwl.model import gemma
from icl_iwl.model import presets


@pytest.fixture(scope='module')
def tok():
  return tokenizer.load_default()


def _fake_embed(texts):
  """A cheap deterministic embedding: a random vector per text (no ties)."""
  return np.stack([np.random.default_rng(list(hashlib.sha256(t.encode()).digest()))
                   .normal(size=64).astype(np.float32) for t in texts])


# Retrieval -------------------------------------------------------------------


def test_neighbours_stay_in_group_skip_copies_and_break_ties_low():
  texts = ['a b', 'a b', 'a c', 'a d', 'x y', 'a b', 'zz']
  groups = [0, 0, 0, 0, 0, 1, 1]
  near = retrieval.neighbours(texts, groups, k=3)
  # 'a c' and 'a d' tie for 'a b' (copies excluded): the lower index first;
  # 'x y' scores 0, still a neighbour; group 1 has one other text.
  assert near[0].tolist() == [2, 3, 4] and near[1].tolist() == [2, 3, 4]
  assert near[5].tolist() == [6, -1, -1]
  for i in range(len(texts)):
    assert i not in near[i]
    assert all(groups[j] == groups[i] and texts[j] != texts[i] for j in near[i] if j >= 0)
  with pytest.raises(ValueError, match='Unknown similarity'):
    retrieval.neighbours(texts, groups, 2, similarity='bm26')


def test_near_duplicates_are_one_word_apart():
  rng = np.random.default_rng(0)
  texts = [' '.join(rng.choice(list('abc'), int(rng.integers(1, 4))))
           for _ in range(60)]
  groups = rng.integers(0, 2, len(texts)).tolist()
  near = retrieval.near_duplicates(texts, groups)
  for i, a in enumerate(texts):
    want = [j for j, b in enumerate(texts) if groups[j] == groups[i]
            and len(a.split()) == len(b.split())
            and sum(x != y for x, y in zip(a.split(), b.split())) == 1]
    assert near[i] == want


def test_embeddings_are_cached_on_disk(tmp_path):
  calls = []

  def embed(texts):
    calls.append(list(texts))
    return _fake_embed(texts)

  cached = retrieval.cached(embed, 'embedded|gemma3_270m|float32', tmp_path)
  first = cached(['a b', 'c'])
  np.testing.assert_array_equal(cached(['a b', 'c']), first)
  assert calls == [['a b', 'c']]
  files = list(tmp_path.iterdir())
  assert len(files) == 1 and files[0].name.startswith('embedded_gemma3_270m_float32-')
  cached(['a', 'b c'])  # Other texts (same characters): another file.
  retrieval.cached(embed, 'other', tmp_path)(['a b', 'c'])  # Another model.
  assert len(calls) == 3 and len(list(tmp_path.iterdir())) == 3
  files[0].write_bytes(b'not numpy')  # A damaged file is recomputed.
  np.testing.assert_array_equal(cached(['a b', 'c']), first)
  assert len(calls) == 4 and not list(tmp_path.glob('.*.tmp'))


def test_model_embedder_mean_pools_each_text_alone(tok):
  model = gemma.Transformer(presets.get('tiny'))
  params = gemma.init_params(model, jax.random.key(0))
  texts = ['the red dog', 'Input: a much longer text than the others, with '
           'enough tokens to need the next padded length', '', 'cat']
  got = embedding.model_embedder(model, params, tok, batch_size=2)(texts)
  assert got.shape == (4, presets.get('tiny').embed_dim)
  for text, vector in zip(texts, got):
    ids = tok.encode(text, add_bos=True)
    n = len(ids)
    hidden, _ = model.apply(
        {'params': params}, np.asarray([ids]), np.arange(n)[None],
        np.tril(np.ones((n, n), bool))[None], return_hidden=True)
    want = np.asarray(hidden[0, 1:]).mean(0) if n > 1 else np.zeros_like(vector)
    np.testing.assert_allclose(vector, want, atol=1e-5)
  assert embedding.model_key(
      ml_collections.ConfigDict(dict(checkpoint='random', preset='tiny',
                                     dtype='float32')), 3) == 'random|tiny|float32|seed=3'
