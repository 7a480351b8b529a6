"""The jitted multiple-choice scorer: log p(choice | context + prompt).

    scorer = Scorer(model, params, tok)
    results = scorer.score([Item('The capital of France is', (' Paris', ' Rome'), 0)])
    results[0].logprob  # summed log-likelihood of each choice's tokens

`Scorer.score_tokens` takes items as token ids with an explicit shared prefix
instead (the lm-eval backend, icl_iwl/lm_eval.py), and also says whether each
choice is the greedy continuation.

Why it is fast:
  * items are packed as trees (prompt once, choices as branches; see
    `packing.py`) into rows of a few fixed lengths, so a whole evaluation
    compiles a handful of times (`Scorer.num_compiled`);
  * hidden states are gathered at the positions that predict choice tokens
    before the vocabulary projection (most of the 270M model's cost);
  * a context shared by many items (documents in context) is encoded once,
    in chunks, into a batch-1 key/value memory that every row attends to;
    the last `context_cache` memories are kept, so a context that recurs
    (the same ICL subsample for another probe split) is not encoded again;
  * a call's results are read only after the next batch is tokenized and
    packed (JAX dispatch is asynchronous), so host work overlaps the
    device's;
  * rows are sharded over the mesh's batch axes.
"""

import collections
import dataclasses
import itertools
import logging
from typing import Any, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.eval import packing
from icl_iwl.eval.options import ScorerConfig
from icl_iwl.eval.packing import Item
from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib

RULES = ('sum', 'mean', 'char')  # Summed, per-token, per-character log-lik.


@dataclasses.dataclass(frozen=True)
class ItemScore:
  """Scores of one item's choices.

  logprob: summed log-likelihood of each choice; num_tokens / num_chars: its
  length, for the per-token ('mean') and per-character ('char') rules.
  """

  id: str
  answer: int | None
  logprob: tuple[float, ...]
  num_tokens: tuple[int, ...]
  num_chars: tuple[int, ...]

  def scores(self, rule: str) -> np.ndarray:
    logprob = np.asarray(self.logprob)
    if rule == 'sum':
      return logprob
    if rule == 'mean':
      return logprob / np.asarray(self.num_tokens)
    if rule == 'char':
      return logprob / np.asarray(self.num_chars)
    raise ValueError(f'Unknown scoring rule {rule!r}; use one of {RULES}.')

  def prediction(self, rule: str) -> int:
    return int(np.argmax(self.scores(rule)))

  def correct(self, rule: str) -> bool | None:
    return None if self.answer is None else self.prediction(rule) == self.answer

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    for rule in RULES:
      out[f'prediction_{rule}'] = self.prediction(rule)
      out[f'correct_{rule}'] = self.correct(rule)
    return out


def chunk_size(n: int, shards: int, limit: int) -> int:
  """Targets per shard whose logits are made at once: the largest power of
  two that divides N with shards x it at most `limit` (or 1)."""
  cap = max(1, limit // shards)
  return min(n & -n, 1 << (cap.bit_length() - 1))


def tree_mask(segments_BT: jax.Array, branches_BT: jax.Array) -> jax.Array:
  """[B, T, T]: causal within an item; a choice sees its prompt and itself."""
  same_branch = branches_BT[:, :, None] == branches_BT[:, None, :]
  return cache.causal_mask(segments_BT) & (same_branch | (branches_BT == 0)[:, None, :])


class Scorer:
  """Scores multiple-choice items with a Gemma model; see the module doc."""

  def __init__(self, model: gemma.Transformer, params: Any,
               tok: tokenizer_lib.Tokenizer, config: ScorerConfig = ScorerConfig(),
               mesh: jax.sharding.Mesh | None = None,
               rules: rules_lib.Rules = rules_lib.DEFAULT_RULES):
    self.model, self.tok, self.config = model, tok, config
    self.mesh = mesh or mesh_lib.make_mesh(mesh_lib.DEFAULT_MESH)
    self.rules = rules_lib.fit(rules, model.config, self.mesh)
    self._shards = mesh_lib.batch_divisor(self.mesh, self.rules)
    self.rows = -(-config.rows_per_batch // self._shards) * self._shards
    self._param_shardings = rules_lib.param_shardings(model, self.mesh, self.rules)
    self.params = jax.device_put(params, self._param_shardings)
    batch_axes = dict(self.rules).get('batch')
    self._batch_sharding = jax.NamedSharding(self.mesh, jax.P(batch_axes))
    self._replicated = jax.NamedSharding(self.mesh, jax.P())
    self._compiled: dict[tuple, Any] = {}
    self._memories: collections.OrderedDict[str, cache.Cache] = (
        collections.OrderedDict())

  def set_params(self, params: Any) -> None:
    """Scores with `params` from now on (e.g. during training)."""
    self.params = jax.device_put(params, self._param_shardings)
    self._memories.clear()

  @property
  def num_compiled(self) -> int:
    """How many distinct shapes have been compiled so far."""
    return len(self._compiled)

  # Jitted computations -------------------------------------------------------

  def _score_rows(self, params, tokens, positions, segments, branches, sources,
                  targets, memory):
    """([G, N] log p(target), [G, N] whether the target is the argmax)."""
    hidden, _ = self.model.apply(
        {'params': params}, tokens, positions, tree_mask(segments, branches),
        memory, return_hidden=True)
    # [G, N, D]: only the positions that predict a choice token, from each
    # shard's rows flattened.
    g, n = targets.shape
    hidden = hidden.reshape(g, -1, hidden.shape[-1])
    hidden = jnp.take_along_axis(hidden, sources[..., None], axis=1)
    c = chunk_size(n, g, self.config.logit_chunk)

    def chunk_logprob(args):
      h_GCD, t_GC = args
      logits = self.model.apply({'params': params}, h_GCD, method=self.model.logits)
      target = jnp.take_along_axis(logits, t_GC[..., None], axis=-1)[..., 0]
      return (target - jax.nn.logsumexp(logits, axis=-1),
              target >= jnp.max(logits, axis=-1))

    # [N/C, G, C] each.
    out = jax.lax.map(chunk_logprob, (
        hidden.reshape(g, n // c, c, -1).swapaxes(0, 1),
        targets.reshape(g, n // c, c).swapaxes(0, 1)))
    return tuple(x.swapaxes(0, 1).reshape(g, n) for x in out)

  def _prefill(self, params, tokens, positions, valid, memory, start):
    """Writes one chunk of a shared context into its batch-1 memory."""
    mask = cache.causal_mask(valid.astype(jnp.int32))
    _, kv = self.model.apply({'params': params}, tokens, positions, mask, memory,
                             return_hidden=True)
    return cache.write(memory, kv, positions, valid, start)

  def _compiled_fn(self, key: tuple, fn, args, in_shardings, out_shardings):
    if key not in self._compiled:
      logging.info('Scorer: compiling %s', key)
      with rules_lib.activation_context(self.mesh, self.rules):
        self._compiled[key] = jax.jit(
            fn, in_shardings=in_shardings, out_shardings=out_shardings,
        ).lower(*args).compile()
    return self._compiled[key]

  def _memory_shardings(self, memory):
    return None if memory is None else jax.tree.map(lambda _: self._replicated, memory)

  # Host side -----------------------------------------------------------------

  def encode_context(self, ids: Sequence[int]) -> cache.Cache:
    """Encodes a shared context's token ids once into a batch-1 memory."""
    chunk = self.config.context_chunk
    if len(ids) > self.config.max_context:
      raise ValueError(f'A shared context of {len(ids)} tokens exceeds '
                       f'max_context={self.config.max_context}.')
    length = -(-len(ids) // chunk) * chunk
    memory = cache.init(self.model.config, 1, length, self.model.dtype)
    padded = np.zeros(length, np.int32)
    padded[:len(ids)] = ids
    for start in range(0, len(ids), chunk):
      tokens = padded[None, start:start + chunk]
      positions = np.arange(start, start + chunk, dtype=np.int32)[None]
      valid = positions < len(ids)
      args = (self.params, tokens, positions, valid, memory, np.int32(start))
      rep = self._replicated
      fn = self._compiled_fn(
          ('prefill', length), self._prefill, args,
          (self._param_shardings, rep, rep, rep, self._memory_shardings(memory), rep),
          self._memory_shardings(memory))
      memory = fn(*args)
    return memory

  def _check_lengths(self, encoded: Sequence[packing.Encoded],
                     items: Sequence[Item] = ()) -> list[packing.Encoded]:
    limit = max(self.config.buckets)
    out = []
    for e in encoded:
      if e.length <= limit:
        out.append(e)
        continue
      name = (items[e.index].id if items else '') or e.index
      keep = len(e.prompt) - (e.length - limit)
      if self.config.too_long == 'error' or keep < 2:
        raise ValueError(
            f'Item {name!r} needs {e.length} tokens (prompt '
            f'{len(e.prompt)}, choices {[len(c) for c in e.choices]}) but the '
            f'largest bucket is {limit}; raise ScorerConfig.buckets, move shared '
            "text into the item's context, or set too_long='truncate_left'.")
      logging.warning('Item %r: truncating %d prompt tokens from the left.',
                      name, e.length - limit)
      prompt = e.prompt[:1] + e.prompt[len(e.prompt) - keep + 1:]
      out.append(dataclasses.replace(e, prompt=prompt))
    return out

  def score(self, items: Sequence[Item], progress: bool = False) -> list[ItemScore]:
    """Scores every choice of every item (items may have different contexts)."""
    items = list(items)
    with tqdm.tqdm(total=len(items), disable=not progress, desc='scoring',
                   unit='item') as bar:
      return self._score(items, bar)

  def score_iter(self, items: Iterable[Item], chunk: int = 1024,
                 total: int | None = None, progress: bool = False,
                 ) -> Iterator[ItemScore]:
    """Scores a stream of items `chunk` at a time, yielding results in order."""
    items = iter(items)
    with tqdm.tqdm(total=total, disable=not progress, desc='scoring',
                   unit='item') as bar:
      while block := list(itertools.islice(items, chunk)):
        yield from self._score(block, bar)

  def _context(self, context: str) -> tuple[list[int], cache.Cache | None, int]:
    """(prompt prefix ids, memory, position offset) for items of `context`.

    A shared context is encoded once into memory, except its last token,
    which stays in each row to predict the choices of an empty prompt. The
    last `context_cache` memories are kept for reuse.
    """
    prefix = self.tok.encode(context, add_bos=True)
    if len(prefix) == 1 or not self.config.share_context:
      return prefix, None, 0
    memory = self._memories.pop(context, None)
    if memory is None:
      memory = self.encode_context(prefix[:-1])
    if self.config.context_cache:
      self._memories[context] = memory
      while len(self._memories) > self.config.context_cache:
        self._memories.popitem(last=False)
    return prefix[-1:], memory, len(prefix) - 1

  def score_tokens(self, groups: Iterable[tuple[Sequence[int],
                                                Sequence[packing.Encoded]]],
                   num_items: int, progress: bool = False,
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Scores items given as token ids (e.g. lm-eval's requests).

    Args:
      groups: (shared, items): `shared` token ids (the group's common
        prefix, BOS first; or empty) are encoded once into a memory that each
        item's prompt continues; an item's prompt is non-empty (its last
        token predicts the first choice token) and its `index` is in
        [0, num_items).
      num_items: how many items the groups hold in all.
      progress: show a progress bar.

    Returns:
      (logprob, greedy), each indexed [item][choice]: log p(choice | shared +
      prompt), and whether every choice token is the argmax of its logits.
    """
    with tqdm.tqdm(total=num_items, disable=not progress, desc='scoring',
                   unit='item') as bar:
      return self._score_groups(
          ((self.encode_context(shared) if shared else None, len(shared),
            self._check_lengths(encoded)) for shared, encoded in groups),
          num_items, bar)

  def _score(self, items: list[Item], bar: tqdm.tqdm) -> list[ItemScore]:
    by_context = collections.defaultdict(list)
    for i, item in enumerate(items):
      by_context[item.context].append(i)
    num_tokens = [()] * len(items)

    def groups() -> Iterator[tuple[cache.Cache | None, int, list[packing.Encoded]]]:
      for context, indices in by_context.items():
        prefix, memory, offset = self._context(context)
        encoded = packing.encode([items[i] for i in indices], indices, self.tok, prefix)
        encoded = self._check_lengths(encoded, items)
        for e in encoded:
          num_tokens[e.index] = tuple(len(c) for c in e.choices)
        yield memory, offset, encoded

    logprob, _ = self._score_groups(groups(), len(items), bar)
    return [
        ItemScore(id=item.id, answer=item.answer,
                  logprob=tuple(float(x) for x in lp), num_tokens=n,
                  num_chars=tuple(len(c) for c in packing.choice_texts(item)))
        for item, lp, n in zip(items, logprob, num_tokens)
    ]

  def _score_groups(
      self, groups: Iterable[tuple[cache.Cache | None, int, list[packing.Encoded]]],
      num_items: int, bar: tqdm.tqdm) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Packs and runs each group (memory, offset, encoded items); returns
    [item][choice] summed log-likelihoods and all-tokens-greedy flags."""
    logprob: list[np.ndarray] = [np.zeros(0)] * num_items
    greedy: list[np.ndarray] = [np.zeros(0, bool)] * num_items

    def collect(batch: packing.Batch, out: tuple[jax.Array, jax.Array]) -> None:
      target_logprob, target_greedy = (np.asarray(x) for x in out)  # Waits.
      real = batch.item >= 0
      for i, j, lp, g in zip(batch.item[real], batch.choice[real],
                             target_logprob[real], target_greedy[real]):
        logprob[i][j] += lp
        greedy[i][j] &= g
      bar.update(len(set(batch.item[real].tolist())))

    # One rows call in flight: the host tokenizes and packs the next batch
    # while the device runs it, then reads its results and dispatches the next.
    pending = None
    for memory, offset, encoded in groups:
      for e in encoded:
        logprob[e.index] = np.zeros(len(e.choices))
        greedy[e.index] = np.ones(len(e.choices), bool)
      for batch in packing.pack(encoded, offset, self.config.buckets, self.rows,
                                self.config.min_row_length, self._shards):
        if pending:
          collect(*pending)
        pending = batch, self._run(batch, memory)
    if pending:
      collect(*pending)
    return logprob, greedy

  def _run(self, batch: packing.Batch, memory: cache.Cache | None
           ) -> tuple[jax.Array, jax.Array]:
    """Dispatches one batch; [G, N] log p(target) and greedy flags, not
    waited for."""
    args = (self.params, *batch.device_arrays(), memory)
    memory_len = None if memory is None else memory['k'].shape[2]
    key = ('rows', batch.tokens.shape, batch.targets.shape, memory_len)
    fn = self._compiled_fn(
        key, self._score_rows, args,
        (self._param_shardings,) + (self._batch_sharding,) * 6
        + (self._memory_shardings(memory),),
        (self._batch_sharding, self._batch_sharding))
    return fn(*args)


def accuracy(scores: Iterable[ItemScore]) -> dict[str, float]:
  """Accuracy under each rule, over items with a known answer."""
  scored = [s for s in scores if s.answer is not None]
  if not scored:
    return {}
  return {rule: float(np.mean([s.correct(rule) for s in scored])) for rule in RULES}
