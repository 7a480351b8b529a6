"""Host side of the scorer: multiple-choice items packed into fixed-shape rows.

One item becomes a small tree in a row: its prompt, then each choice as a
branch that sees the prompt but not the other choices (so the prompt is
encoded once per item). Several items share a row as separate segments.

  row tokens    [ p p p | a a | b b b | q q | x | y y ]   two items
  segments      [ 1 1 1   1 1   1 1 1   2 2   2   2 2 ]
  branches      [ 0 0 0   1 1   2 2 2   0 0   1   2 2 ]
  positions     [ 0 1 2   3 4   3 4 5   0 1   2   2 3 ]  (+ context length)

The log-likelihood of a choice token is read from the hidden state of the
token before it in its branch (the last prompt token for the first one), so
only those positions ever reach the 262k-way output layer. Targets are listed
per batch shard, not per row: a shard's rows, flattened, share one list, so a
batch pays for its targets in all rather than R times its fullest row's.
"""

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from icl_iwl.data import tokenizer as tokenizer_lib


@dataclasses.dataclass(frozen=True)
class Item:
  """A multiple-choice question, scored by log p(choice | context + prompt).

  Attributes:
    prompt: text before the choices (trailing whitespace moves to the choices).
    choices: the continuations to score; never shown in the prompt.
    answer: index of the correct choice, or None if unknown.
    context: a prefix shared by many items (e.g. documents in context); each
      distinct context is encoded once and its keys/values reused.
    id: a name for the per-item results.
  """

  prompt: str
  choices: tuple[str, ...]
  answer: int | None = None
  context: str = ''
  id: str = ''

  def __post_init__(self):
    object.__setattr__(self, 'choices', tuple(self.choices))
    if not self.choices:
      raise ValueError(f'Item {self.id!r} has no choices.')
    if self.answer is not None and not 0 <= self.answer < len(self.choices):
      raise ValueError(f'Item {self.id!r}: answer {self.answer} is out of range '
                       f'for {len(self.choices)} choices.')
    if any(not c.strip() for c in self.choices):
      raise ValueError(f'Item {self.id!r} has an empty choice: {self.choices}.')


@dataclasses.dataclass(frozen=True)
class Encoded:
  """Token ids of one item; the prompt starts with the item's prefix ids."""

  index: int
  prompt: tuple[int, ...]
  choices: tuple[tuple[int, ...], ...]

  @property
  def length(self) -> int:
    return len(self.prompt) + sum(len(c) for c in self.choices)


def choice_texts(item: Item) -> list[str]:
  """The scored continuations: trailing prompt whitespace moves onto them."""
  trailing = item.prompt[len(item.prompt.rstrip()):]
  return [trailing + c for c in item.choices]


def encode(items: Sequence[Item], indices: Sequence[int],
           tok: tokenizer_lib.Tokenizer, prefix: Sequence[int]) -> list[Encoded]:
  """Tokenizes prompts and choices separately (see `choice_texts`).

  `prefix` (BOS, or the tokens of the context not kept in memory) starts
  every prompt, so no prompt is empty.
  """
  prompts = [item.prompt.rstrip() for item in items]
  choices = [c for item in items for c in choice_texts(item)]
  prompt_ids = tok.encode_batch(prompts)
  choice_ids = iter(tok.encode_batch(choices))
  return [
      Encoded(index, tuple(prefix) + tuple(p),
              tuple(tuple(next(choice_ids)) for _ in item.choices))
      for index, item, p in zip(indices, items, prompt_ids)
  ]


@dataclasses.dataclass(frozen=True)
class Batch:
  """Fixed-shape arrays for one scorer call (R rows of T tokens; G batch
  shards of R / G rows each, with N targets per shard).

  tokens, positions, segments, branches: [R, T] int32 (segment 0 = padding).
  sources: [G, N] index into the shard's rows flattened ([R / G * T]) of the
    hidden state that predicts each target.
  targets: [G, N] target token ids.
  item, choice: [G, N] which item/choice each target belongs to (-1: padding).
  """

  tokens: np.ndarray
  positions: np.ndarray
  segments: np.ndarray
  branches: np.ndarray
  sources: np.ndarray
  targets: np.ndarray
  item: np.ndarray
  choice: np.ndarray

  def device_arrays(self) -> tuple[np.ndarray, ...]:
    return (self.tokens, self.positions, self.segments, self.branches,
            self.sources, self.targets)


def bucket(n: int, buckets: Sequence[int]) -> int | None:
  """The smallest bucket >= n, or None."""
  return next((b for b in sorted(buckets) if b >= n), None)


def num_targets_bucket(n: int) -> int:
  """The smallest of 8, 12, 16, 24, 32, 48, ... (2^k and 1.5 x 2^k) >= n: few
  shapes to compile, at most a third of the logits wasted on padding."""
  b = 8
  while b < n:
    b = b * 3 // 2 if b & (b - 1) == 0 else b // 3 * 4
  return b


def num_rows_bucket(n: int) -> int:
  """The smallest of 1, 2, 3, 4, 6, 8, 12, ... (2^k and 1.5 x 2^k) >= n: a
  partial batch pads at most a third of its rows, with few shapes to compile."""
  b = 1
  while b < n:
    b = b + 1 if b < 2 else b * 3 // 2 if b & (b - 1) == 0 else b // 3 * 4
  return b


def _rows(encoded: list[Encoded], buckets: Sequence[int], min_length: int
          ) -> list[list[Encoded]]:
  """First-fit decreasing: each row's capacity is the bucket of its first item,
  or of `min_length` if longer (so that short items share rows)."""
  min_length = min(min_length, max(buckets))
  rows, fill, capacity = [], [], []
  for e in sorted(encoded, key=lambda e: -e.length):
    for r, row in enumerate(rows):
      if fill[r] + e.length <= capacity[r]:
        row.append(e)
        fill[r] += e.length
        break
    else:
      rows.append([e])
      fill.append(e.length)
      capacity.append(bucket(max(e.length, min_length), buckets))
  return rows


def pack(encoded: list[Encoded], offset: int, buckets: Sequence[int],
         rows_per_batch: int, min_row_length: int = 0, row_multiple: int = 1
         ) -> Iterator[Batch]:
  """Packs encoded items into batches of at most `rows_per_batch` rows.

  Args:
    encoded: items that each fit the largest bucket.
    offset: position of the first prompt token (the shared context length).
    buckets: allowed row lengths T.
    rows_per_batch: the most rows R per batch (a multiple of `row_multiple`).
    min_row_length: rows hold at least this many tokens' worth of items.
    row_multiple: R is `row_multiple` (the batch shards, G) times a
      `num_rows_bucket`: a last, partial batch is padded with empty rows only
      up to that.

  Yields:
    Batches whose T is a bucket and N a `num_targets_bucket` (<= R / G * T).
  """
  if rows_per_batch % row_multiple:
    raise ValueError(f'rows_per_batch={rows_per_batch} is not a multiple of '
                     f'row_multiple={row_multiple}.')
  rows = _rows(encoded, buckets, min_row_length)
  for start in range(0, len(rows), rows_per_batch):
    chunk = rows[start:start + rows_per_batch]
    r = min(row_multiple * num_rows_bucket(-(-len(chunk) // row_multiple)),
            rows_per_batch)
    t = max(bucket(sum(e.length for e in row), buckets) for row in chunk)
    per_shard = r // row_multiple
    n_targets = max(
        sum(len(c) for row in chunk[g:g + per_shard] for e in row for c in e.choices)
        for g in range(0, len(chunk), per_shard))
    n = min(per_shard * t, num_targets_bucket(n_targets))
    yield _fill(chunk, r, t, n, offset, row_multiple)


def _fill(rows: list[list[Encoded]], r: int, t: int, n: int, offset: int,
          shards: int) -> Batch:
  """Lays out the items of each row; see the module docstring."""
  tokens, positions, segments, branches = (np.zeros((r, t), np.int32) for _ in range(4))
  sources, targets = (np.zeros((shards, n), np.int32) for _ in range(2))
  item, choice = (np.full((shards, n), -1, np.int32) for _ in range(2))
  per_shard = r // shards
  filled = [0] * shards  # Targets laid out per shard.
  for i, row in enumerate(rows):
    g, base = i // per_shard, i % per_shard * t  # Shard; row start in it.
    col, k = 0, filled[g]
    for segment, e in enumerate(row, start=1):
      lp = len(e.prompt)
      tokens[i, col:col + lp] = e.prompt
      positions[i, col:col + lp] = offset + np.arange(lp)
      segments[i, col:col + lp] = segment
      last_prompt = col + lp - 1
      col += lp
      for j, ids in enumerate(e.choices):
        lc = len(ids)
        tokens[i, col:col + lc] = ids
        positions[i, col:col + lc] = offset + lp + np.arange(lc)
        segments[i, col:col + lc] = segment
        branches[i, col:col + lc] = j + 1
        sources[g, k:k + lc] = base + np.array([last_prompt, *range(col, col + lc - 1)])
        targets[g, k:k + lc] = ids
        item[g, k:k + lc] = e.index
        choice[g, k:k + lc] = j
        col += lc
        k += lc
    filled[g] = k
  assert max(filled) <= n, (filled, n)  # A row's targets < t: never overflows.
  return Batch(tokens, positions, segments, branches, sources, targets, item, choice)
