"""Nearest neighbours within groups of texts: BM25 or embeddings; near-duplicates.

    near = retrieval.neighbours(texts, groups, k=4, similarity='bm25')
    near = retrieval.neighbours(texts, groups, k=4, similarity='embedding',
                                embed=embed)
    near[i]        # int [k]: the k texts of i's group most similar to texts[i],
                   # best first (-1 where the group has fewer)
    retrieval.near_duplicates(texts, groups)[i]  # the texts one word away

Similarity of a query text to a pool text:
  bm25       Okapi BM25 (`bm25s`, its defaults: lucene, k1 1.5, b 0.75) of
             the query's words: lower-cased runs of letters and digits, no
             stop words removed, no stemming (IC-Train inputs mix English
             and invented words).
  embedding  cosine of `embed(texts)` vectors, e.g. the loaded model's
             mean-pooled hidden states (embedding.py), kept on disk by
             `cached`.
A text is never its own neighbour, nor is another text equal to it. Ties go
to the lower index, so the neighbours are a function of the texts alone.
`Bm25` and `Cosine` also score queries from outside the pool (evaluation).
"""

import collections
import hashlib
import logging as std_logging
import os
import pathlib
import re
from typing import Callable, Hashable, Sequence

from absl import logging
import numpy as np

from icl_iwl import paths

SIMILARITIES = ('bm25', 'embedding')
Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> float [N, D]

_BLOCK = 512  # Query rows scored at once: memory [_BLOCK, pool] float32.
_CACHE_FORMAT = 'v1'  # Bump when the embedding of a text changes meaning.


def _bm25s():
  """The bm25s module, imported on first use: importing it runs a jax
  computation (when jax is installed), which starts the XLA backend, and
  `jax.distributed.initialize` must come before that."""
  import bm25s  # pylint: disable=g-import-not-at-top
  # It sets its own logger to DEBUG: one line per index built.
  std_logging.getLogger('bm25s').setLevel(std_logging.WARNING)
  return bm25s


def _words(texts: Sequence[str], ids: bool):
  return _bm25s().tokenize(list(texts), token_pattern=r'(?u)\b\w+\b',
                           stopwords=None, show_progress=False, return_ids=ids)


class Bm25:
  """BM25 scores of query texts against a pool of texts."""

  def __init__(self, pool: Sequence[str]):
    self.size = len(pool)
    words = _words(pool, ids=True)
    self._index = None  # A pool without words scores 0 everywhere.
    if words.vocab:
      self._index = _bm25s().BM25()
      self._index.index(words, show_progress=False)

  def scores(self, queries: Sequence[str]) -> np.ndarray:
    """float32 [Q, P]: the score of each pool text for each query."""
    out = np.zeros((len(queries), self.size), np.float32)
    for q, words in enumerate(_words(queries, ids=False)):
      if words and self._index is not None:  # No words: 0 everywhere.
        out[q] = self._index.get_scores(words)
    return out


class Cosine:
  """Cosine similarities of query vectors to a pool of vectors."""

  def __init__(self, pool_PD: np.ndarray):
    self._pool_PD = _unit(pool_PD)

  def scores(self, queries_QD: np.ndarray) -> np.ndarray:
    """float32 [Q, P]."""
    return _unit(queries_QD) @ self._pool_PD.T


def _unit(x_ND: np.ndarray) -> np.ndarray:
  x_ND = np.asarray(x_ND, np.float32)
  norm_N1 = np.linalg.norm(x_ND, axis=-1, keepdims=True)
  return x_ND / np.maximum(norm_N1, 1e-12)  # A zero vector stays zero.


def top(scores_QP: np.ndarray, k: int) -> np.ndarray:
  """int [Q, k]: per row the columns of the k highest finite scores, highest
  first, ties to the lower column; -1 where a row has fewer than k."""
  q, p = scores_QP.shape
  out = np.full((q, k), -1, np.int64)
  if not p or not k:
    return out
  kth = -np.partition(-scores_QP, min(k, p) - 1, axis=1)[:, min(k, p) - 1]
  for r in range(q):
    row = scores_QP[r]
    candidates = np.flatnonzero((row >= kth[r]) & np.isfinite(row))
    best = candidates[np.argsort(-row[candidates], kind='stable')][:k]
    out[r, :len(best)] = best
  return out


def neighbours(texts: Sequence[str], groups: Sequence[Hashable], k: int,
               similarity: str = 'bm25', embed: Embed | None = None
               ) -> np.ndarray:
  """int [N, k]: per text the k most similar other texts of its group (see
  the module doc), best first, -1 where the group has fewer.

  Raises:
    ValueError: for an unknown `similarity`, or 'embedding' without `embed`.
  """
  if similarity not in SIMILARITIES:
    raise ValueError(f'Unknown similarity {similarity!r}; use one of '
                     f'{", ".join(SIMILARITIES)}.')
  vectors_ND = None
  if similarity == 'embedding':
    if embed is None:
      raise ValueError(
          "similarity 'embedding' needs an embed function (texts -> [N, D]), "
          'e.g. embedding.model_embedder(...) passed by the training setup.')
    vectors_ND = np.asarray(embed(list(texts)), np.float32)
    if vectors_ND.ndim != 2 or len(vectors_ND) != len(texts):
      raise ValueError(f'embed returned shape {vectors_ND.shape} for '
                       f'{len(texts)} texts; want [N, D].')
  members: dict[Hashable, list[int]] = collections.defaultdict(list)
  for i, g in enumerate(groups):
    members[g].append(i)
  out = np.full((len(texts), k), -1, np.int64)
  for idx in members.values():
    idx = np.asarray(idx)
    pool = [texts[i] for i in idx]
    same: dict[str, list[int]] = collections.defaultdict(list)
    for p, text in enumerate(pool):
      same[text].append(p)
    if vectors_ND is None:
      scorer, queries = Bm25(pool), pool
    else:
      scorer, queries = Cosine(vectors_ND[idx]), vectors_ND[idx]
    for start in range(0, len(idx), _BLOCK):
      scores_BP = scorer.scores(queries[start:start + _BLOCK])
      for r in range(len(scores_BP)):
        scores_BP[r, same[pool[start + r]]] = -np.inf  # Itself, its copies.
      best_BK = top(scores_BP, k)
      out[idx[start:start + len(best_BK)]] = np.where(
          best_BK >= 0, idx[np.maximum(best_BK, 0)], -1)
  return out


def near_duplicates(texts: Sequence[str], groups: Sequence[Hashable]
                    ) -> list[list[int]]:
  """Per text, the other texts of its group one word away: as many
  whitespace-separated words, exactly one position different. Ascending."""
  words = [t.split() for t in texts]
  buckets: dict[tuple, list[int]] = collections.defaultdict(list)
  for i, w in enumerate(words):
    for p in range(len(w)):  # The text with word p masked.
      buckets[(groups[i], len(w), p, *w[:p], None, *w[p + 1:])].append(i)
  out: list[set[int]] = [set() for _ in texts]
  for bucket in buckets.values():
    for i in bucket:
      out[i].update(j for j in bucket if words[j] != words[i])
  return [sorted(s) for s in out]


def cached(embed: Embed, key: str,
           directory: str | os.PathLike | None = None) -> Embed:
  """`embed`, its results kept on disk: one .npy file per (key, texts).

  Args:
    embed: texts -> [N, D].
    key: names what embeds (e.g. `embedding.model_key`): the model
      checkpoint, preset and dtype.
    directory: default <cache>/embeddings.

  Files are written atomically (`paths.atomic_path`); one that does not load
  is computed again.
  """
  root = pathlib.Path(directory) if directory else paths.cache_dir() / 'embeddings'
  slug = re.sub(r'[^\w.=-]+', '_', key)[:80]

  def run(texts: Sequence[str]) -> np.ndarray:
    digest = hashlib.sha256(f'{_CACHE_FORMAT}\0{key}'.encode())
    for text in texts:  # Length-prefixed: no two text lists collide.
      data = text.encode()
      digest.update(len(data).to_bytes(8, 'little') + data)
    path = root / f'{slug}-{digest.hexdigest()[:24]}.npy'
    if path.exists():
      try:
        vectors = np.load(path)
        if vectors.ndim == 2 and len(vectors) == len(texts):
          return vectors
      except (OSError, ValueError) as e:
        logging.warning('Embedding cache %s does not load (%s); recomputing.',
                        path, e)
    vectors = np.asarray(embed(texts), np.float32)
    with paths.atomic_path(path) as tmp:
      with open(tmp, 'wb') as f:
        np.save(f, vectors)
    return vectors

  return run
