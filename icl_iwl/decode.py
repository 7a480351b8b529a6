"""Batched autoregressive generation on the model's key/value memory.

    decoder = runtime.decoder(config, rt)
    decoder.generate(['The capital of France is'], decode.Options(max_new_tokens=8))
    decoder.generate(prompts, decode.Options(temperature=0.7, top_p=0.9, stop=('\\n',)),
                     prefix=few_shot_examples, seeds=range(len(prompts)))

The model reads BOS + prefix + prompt (the prefix and each prompt tokenized
separately, as the scorer does with a context and its prompts); a completion
excludes both, stops after `max_new_tokens` tokens or at EOS (excluded) and is
cut just before the first stop string.

How it works:
  * the prefix is encoded once, in chunks of `prefill_chunk` tokens, into a
    batch-1 memory that every row attends to (as the scorer shares a context);
    its last token starts each row, so that an empty prompt is continued;
  * prompts are sorted by length and taken `batch_size` at a time; a batch is
    right-padded to a bucket length (a power of two, or a multiple of
    `prefill_chunk`), so few shapes compile; each row's positions continue the
    prefix and its padding is masked out of its cache;
  * the rows are prefilled in chunks of at most `prefill_chunk` tokens, then
    one jitted `lax.while_loop` samples a token per row, runs the model on it
    and writes its keys/values, until `max_new_tokens` or until every row has
    stopped: no Python per token;
  * a row stops at EOS or at a token whose text holds a stop string; the host
    then cuts the text at the first stop string (also one that spans tokens,
    which does not end decoding early);
  * sampling (temperature, then top-k, then top-p) draws row r's token at step
    i with `fold_in(key(seeds[r]), i)`, so a request's completion does not
    depend on the other requests of the call or on its position;
  * a greedy step of a float32 model reads the output table (for the 270M
    0.67 of the 1.07 GB a step reads) through a bfloat16 copy of it, kept
    by the decoder (0.34 GB): every token is scored with the copy, the
    `SCREEN` best are scored exactly in float32, and the best of those is
    taken when a bound on the copy's error proves no other token's float32
    logit can reach it (`greedy_screened`); a step where some running row is
    left unproven projects every token in float32. The tokens are argmax's
    over the float32 logits (up to the rounding in which two ways of
    computing a float32 dot product differ), in half the table's reads;
  * rows are sharded over the mesh's batch axes; the prefix memory is
    replicated.
"""

import dataclasses
import functools
import logging
import time
from typing import Any, NamedTuple, Sequence

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from icl_iwl import runtime
from icl_iwl.model import cache as cache_lib
from icl_iwl.model import gemma
from icl_iwl.sharding import axes
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib

_MIN_BUCKET = 8
# Candidates a screened greedy step scores exactly (P in the einsums below).
# On the 270M's hidden states 16 left no position unproven, 8 left 1.3%.
SCREEN = 32


@dataclasses.dataclass(frozen=True)
class Options:
  """How completions are generated (the same for every prompt of a call)."""

  max_new_tokens: int = 64
  temperature: float = 0.0   # 0: greedy
  top_k: int = 0             # 0: off
  top_p: float = 1.0         # 1: off
  stop: tuple[str, ...] = ()

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f'max_new_tokens must be >= 1, not {self.max_new_tokens}.')
    if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f'Need temperature >= 0, top_k >= 0 and 0 < top_p <= 1: '
                       f'{self}.')
    if any(not s for s in self.stop):
      raise ValueError('A stop string must not be empty.')


def bucket(length: int, chunk: int) -> int:
  """A padded length >= `length`: a power of two up to `chunk`, then a
  multiple of `chunk` (so a long prompt is prefilled in whole chunks)."""
  if length > chunk:
    return -(-length // chunk) * chunk
  return max(_MIN_BUCKET, 1 << (length - 1).bit_length())


def sample(logits_BV: jax.Array, seeds_B: jax.Array, step: jax.Array,
           options: Options) -> jax.Array:
  """[B] next tokens from [B, V] float32 logits (argmax if temperature is 0).

  Row b draws with `fold_in(key(seeds_B[b]), step)`: its token depends only
  on its own logits, seed and step.
  """
  if options.temperature == 0:
    # argmax's index (the first maximum, or the first NaN), found as a max,
    # then a search: XLA:CPU's one-pass argmax over [B, V] takes three times
    # as long.
    max_B1 = jnp.max(logits_BV, axis=-1, keepdims=True)
    first_BV = (logits_BV == max_B1) | jnp.isnan(logits_BV)
    return jnp.argmax(first_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV / options.temperature
  if options.top_k:
    # (The barrier: see greedy_screened's top_k.)
    kth_B1 = jax.lax.optimization_barrier(
        jax.lax.top_k(logits_BV, options.top_k))[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if options.top_p < 1:
    # Keep the most likely tokens whose mass before them is < top_p.
    sorted_BV = -jnp.sort(-logits_BV, axis=-1)
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    kept = jnp.sum(before_BV < options.top_p, axis=-1, keepdims=True)
    min_B1 = jnp.take_along_axis(sorted_BV, kept - 1, axis=-1)
    logits_BV = jnp.where(logits_BV < min_B1, -jnp.inf, logits_BV)
  keys_B = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), step))(seeds_B)
  return jax.vmap(jax.random.categorical)(keys_B, logits_BV).astype(jnp.int32)


class Screen(NamedTuple):
  """A bfloat16 copy of the [V, D] output table and bounds on its error."""

  table_VD: jax.Array  # bfloat16
  error_D: jax.Array   # max over V of |table - copy|, per column
  scale_D: jax.Array   # max over V of max(|table|, |copy|), per column


@jax.jit
def make_screen(table_VD: jax.Array) -> Screen:
  """The `Screen` of a float32 [V, D] output table."""
  copy_VD = table_VD.astype(jnp.bfloat16)
  wide_VD = copy_VD.astype(jnp.float32)
  return Screen(copy_VD, jnp.max(jnp.abs(table_VD - wide_VD), axis=0),
                jnp.max(jnp.maximum(jnp.abs(table_VD), jnp.abs(wide_VD)), axis=0))


_EXACT = jax.lax.Precision.HIGHEST  # float32 dots also where the default is not.


def greedy_screened(h_BD: jax.Array, table_VD: jax.Array, screen: Screen
                    ) -> tuple[jax.Array, jax.Array]:
  """argmax of the float32 logits h_BD @ table_VD.T, reading `screen`'s copy.

  Every token is scored with the bfloat16 copy (h rounded to bfloat16 too,
  products accumulated in float32), the `SCREEN` best are scored in float32,
  and the best of those (the first on a tie) is row b's token. It is
  argmax's (up to the float32 rounding in which any two ways of computing a
  dot product differ) when `certain_B[b]`: a token t outside the candidates
  has exact_t <= approx_t + bound <= approx_(SCREEN-th) + bound < best, with
    bound = sum_D |h| error + |h - bf16(h)| scale     (both operands' rounding)
          + 2.02 g sum_D |h| scale                     (both dots' accumulation)
  where g = D u / (1 - D u), u = 2^-24, bounds the relative error of a
  float32 sum of D terms (and 2.02 covers |bf16(h)| <= (1 + 2^-8) |h|).

  Returns:
    ([B] int32 tokens, [B] bool certain); a NaN in h leaves its row unproven.
  """
  d = h_BD.shape[-1]
  h16_BD = h_BD.astype(jnp.bfloat16)
  approx_BV = jnp.einsum('BD,VD->BV', h16_BD, screen.table_VD,
                         preferred_element_type=jnp.float32)
  # The barrier keeps XLA:CPU's TopK call (~3 ms at [8, 262144]): without
  # it, a top_k whose results feed other ops was compiled as a sort of every
  # row (~450 ms).
  approx_BP, index_BP = jax.lax.optimization_barrier(
      jax.lax.top_k(approx_BV, SCREEN))
  exact_BP = jnp.einsum('BD,BPD->BP', h_BD, table_VD[index_BP], precision=_EXACT)
  best_B1 = jnp.max(exact_BP, axis=-1, keepdims=True)
  first_B = jnp.min(jnp.where(exact_BP == best_B1, index_BP, table_VD.shape[0]),
                    axis=-1)
  g = d * 2.0**-24 / (1 - d * 2.0**-24)
  abs_BD = jnp.abs(h_BD)
  rounded_BD = jnp.abs(h_BD - h16_BD.astype(jnp.float32))
  bound_B = (jnp.einsum('BD,D->B', abs_BD, screen.error_D + 2.02 * g * screen.scale_D,
                        precision=_EXACT)
             + jnp.einsum('BD,D->B', rounded_BD, screen.scale_D, precision=_EXACT))
  certain_B = best_B1[:, 0] > approx_BP[:, -1] + bound_B
  return first_B.astype(jnp.int32), certain_B


def takes_screen(model: gemma.Transformer, options: Options) -> bool:
  """Whether greedy steps of `model` with `options` use `greedy_screened`:
  greedy, float32 compute and weights, logits that are the table's dot
  products (no softcap: its float32 tanh can tie what argmax tells apart),
  and more tokens than candidates."""
  return (options.temperature == 0 and model.dtype == jnp.float32
          and model.param_dtype == jnp.float32
          and model.config.final_logit_softcap is None
          and model.config.vocab_size > SCREEN)


# Jitted computations, shared by every decoder of a model --------------------


# The layout each weight of a layer has inside the compiled decode loop on
# CPU: the logical axes that lead, the others following in their Gemma
# order. These are the layouts XLA:CPU's dots at a few rows read without a
# copy (found in the compiled loop); in the Gemma layout (q [N, D, H], kv
# [2, K, D, H], gating [2, F, D], attn_vec [N, H, D]) the loop copies each
# such weight into them at every step and XLA does not hoist the copies
# (~310 MB a step for the 270M, against ~1.07 GB of weights read).
LOOP_LAYOUT = {
    'q_einsum': (axes.EMBED,),
    'kv_einsum': (axes.EMBED,),
    'qkv_einsum': (axes.EMBED,),
    'gating_einsum': (axes.EMBED,),
    'attn_vec_einsum': (axes.HEAD_DIM,),
}


def _owner(name: str) -> str:
  """The module a '/'-joined param name belongs to ('.../q_einsum/w' ->
  'q_einsum'; '.../mlp/gating_einsum' -> 'gating_einsum')."""
  parts = name.split('/')
  return parts[-2] if parts[-1] == 'w' else parts[-1]


@functools.cache
def _loop_perms(model: gemma.Transformer) -> dict[str, tuple[int, ...]]:
  """{'/'-joined param name: the permutation into its `LOOP_LAYOUT`} for
  the weights not already in it. Empty off CPU (the layouts are XLA:CPU's)
  and for a scanned model (the inverse would run on the stacked weights
  outside the scan's own loop: a copy of all of them every step)."""
  if model.scan_layers or jax.default_backend() != 'cpu':
    return {}
  specs = traverse_util.flatten_dict(
      rules_lib.logical_specs(gemma.abstract_params(model)), sep='/')
  perms = {}
  for name, spec in specs.items():
    if _owner(name) in LOOP_LAYOUT:
      first = [spec.index(a) for a in LOOP_LAYOUT[_owner(name)]]
      perm = (*first, *[i for i in range(len(spec)) if i not in first])
      if perm != tuple(range(len(spec))):
        perms[name] = perm
  return perms


def _permute(model: gemma.Transformer, params: Any, inverse: bool = False) -> Any:
  """`params` in the decode loop's layout (`LOOP_LAYOUT`), or back.

  The permuted weights pass an optimization barrier, so that XLA does not
  cancel the permutation with its inverse inside the loop (and copy there
  again); the inverse is a transpose XLA folds into the dot.
  """
  perms = _loop_perms(model)
  if not perms:
    return params
  flat = traverse_util.flatten_dict(params, sep='/')
  if missing := sorted(set(perms) - set(flat)):
    raise ValueError(f'decode: the params have no {missing[0]} (and '
                     f'{len(missing) - 1} more): unboxed model params expected.')
  for name, perm in perms.items():
    if inverse:
      flat[name] = jnp.transpose(flat[name], np.argsort(perm))
    else:
      flat[name] = jax.lax.optimization_barrier(jnp.transpose(flat[name], perm))
  return traverse_util.unflatten_dict(flat, sep='/')


@functools.partial(jax.jit, static_argnums=0, donate_argnums=6)
def _prefill(model: gemma.Transformer, params, tokens_BT, positions_BT,
             valid_BT, shared, cache, start, last_index_B, last_BD):
  """Writes a chunk of the rows' tokens into their cache at slot `start`.

  Args:
    tokens_BT, positions_BT, valid_BT: [B, T] the chunk (valid: not padding).
    shared: () or (the batch-1 prefix memory,).
    cache: the rows' cache; slots before `start` hold the earlier chunks.
    last_index_B: [B] index of each row's last real token in the row.
    last_BD: [B, D] hidden state at that token, if an earlier chunk held it.

  Returns:
    (cache, [B, D] hidden state at each row's last real token so far).
  """
  mask_BTT = cache_lib.causal_mask(valid_BT.astype(jnp.int32))
  hidden_BTD, kv = model.apply(
      {'params': params}, tokens_BT, positions_BT, mask_BTT, (*shared, cache),
      return_hidden=True)
  cache = cache_lib.write(cache, kv, positions_BT, valid_BT, start)
  t = tokens_BT.shape[1]
  index_B = last_index_B - start
  inside_B = (index_B >= 0) & (index_B < t)
  h_BD = jnp.take_along_axis(
      hidden_BTD, jnp.clip(index_B, 0, t - 1)[:, None, None], axis=1)[:, 0]
  return cache, jnp.where(inside_B[:, None], h_BD, last_BD)


@functools.partial(jax.jit, static_argnames=('model', 'options'))
def _decode(model: gemma.Transformer, params, shared, cache, last_BD,
            positions_B, seeds_B, padding_B, slot, max_new, stop_V, eos,
            screen: Screen | None, options: Options):
  """Samples up to `max_new` tokens per row after the prefill.

  Args:
    shared, cache: as in `_prefill`; the prompt fills slots [0, slot).
    last_BD: [B, D] hidden state at each row's last prompt token.
    positions_B: [B] position of each row's first new token.
    seeds_B: [B] uint32 sampling seeds.
    padding_B: [B] bool, rows that only fill the batch (stopped from the start).
    slot: where the first new token's keys/values go.
    max_new: tokens to generate at most (<= the cache's spare slots).
    stop_V: [V] bool, tokens whose text holds a stop string.
    eos: the end-of-sequence id.
    screen: the output table's `Screen` when `takes_screen(model, options)`.

  Returns:
    ([B, S] new tokens from index 0, 0 after a row stopped; [B] tokens per
    row, the stopping token included; [2] int32: the steps run, and of them
    those that projected every token in float32: all unless screened, else
    those where a running row's screened pick was left unproven).
  """
  b = last_BD.shape[0]
  n = cache['mask'].shape[1]  # The cache length (>= the new tokens).
  moved = _permute(model, params)  # Permuted back inside the loop.

  def pick(h_BD, step, done_B):
    """([B] next tokens, whether every token was projected in float32)."""
    sampled = lambda: sample(  # noqa: E731
        model.apply({'params': params}, h_BD, method=model.logits), seeds_B,
        step, options)
    if screen is None:
      return sampled(), jnp.bool_(True)
    token_B, certain_B = greedy_screened(
        h_BD, params['embedder']['input_embedding'], screen)
    proven = jnp.all(certain_B | done_B)
    return jax.lax.cond(proven, lambda: token_B, sampled), ~proven

  def cond(state):
    step, _, _, _, done_B, _, _ = state
    return (step < max_new) & ~jnp.all(done_B)

  def body(state):
    step, h_BD, cache, out_BN, done_B, count_B, full = state
    token_B, projected = pick(h_BD, step, done_B)
    token_B = jnp.where(done_B, 0, token_B)
    out_BN = jax.lax.dynamic_update_slice_in_dim(out_BN, token_B[:, None],
                                                 step, axis=1)
    count_B = count_B + (~done_B).astype(jnp.int32)
    done_B = done_B | (token_B == eos) | stop_V[token_B]
    pos_B1 = (positions_B + step)[:, None]
    h_B1D, kv = model.apply(
        {'params': _permute(model, moved, inverse=True)}, token_B[:, None],
        pos_B1, jnp.ones((b, 1, 1), bool), (*shared, cache), return_hidden=True)
    cache = cache_lib.write(cache, kv, pos_B1, jnp.ones((b, 1), bool),
                            slot + step)
    return (step + 1, h_B1D[:, 0], cache, out_BN, done_B, count_B,
            full + projected.astype(jnp.int32))

  state = (jnp.int32(0), last_BD, cache, jnp.zeros((b, n), jnp.int32),
           padding_B, jnp.zeros(b, jnp.int32), jnp.int32(0))
  steps, _, _, out_BN, _, count_B, full = jax.lax.while_loop(cond, body, state)
  return out_BN, count_B, jnp.stack([steps, full])


class Decoder:
  """Generates completions with a Gemma model; see the module doc.

  Attributes:
    batch_size: rows per decoding batch (rounded up to a multiple of the
      mesh's batch shards).
    prefill_chunk: most tokens per row of one prefill call (prefix and
      prompts); a long prompt is prefilled in several.
    steps: decode steps run so far: 'all', the 'screened' ones (greedy,
      through the table's bfloat16 copy) and the 'full' ones that projected
      every token in float32 (unscreened, or screened and left unproven).
  """

  def __init__(self, rt: runtime.Runtime, params=None, *, batch_size: int = 8,
               prefill_chunk: int = 512):
    self.model, self.tok, self.mesh = rt.model, rt.tok, rt.mesh
    self.rules = rules_lib.fit(rt.rules, rt.model.config, rt.mesh)
    shards = mesh_lib.batch_divisor(self.mesh, self.rules)
    self.batch_size = -(-batch_size // shards) * shards
    self.prefill_chunk = prefill_chunk
    self.steps: dict[str, int] = {'all': 0, 'screened': 0, 'full': 0}
    self._screen_cache: tuple[jax.Array, Screen] | None = None  # (table, its screen)
    self._param_shardings = rules_lib.param_shardings(self.model, self.mesh,
                                                      self.rules)
    self.params = jax.device_put(rt.params if params is None else params,
                                 self._param_shardings)
    batch_axes = dict(self.rules).get(axes.BATCH)
    self._rows = jax.NamedSharding(self.mesh, jax.P(batch_axes))
    self._kv_rows = jax.NamedSharding(self.mesh, jax.P(None, batch_axes))
    self._replicated = jax.NamedSharding(self.mesh, jax.P())

  @property
  def num_compiled(self) -> int:
    """How many shapes (and sampling options) this process has compiled
    (shared by every decoder of a model)."""
    return _prefill._cache_size() + _decode._cache_size()  # pylint: disable=protected-access

  # Host side -----------------------------------------------------------------

  def _call(self, fn, *args, **kwargs):
    with rules_lib.activation_context(self.mesh, self.rules):
      return fn(*args, **kwargs)

  def _new_cache(self, rows: int, length: int, sharding) -> cache_lib.Cache:
    cache = cache_lib.init(self.model.config, rows, length, self.model.dtype)
    kv_sharding = self._kv_rows if sharding is self._rows else sharding
    return {k: jax.device_put(v, kv_sharding if k in ('k', 'v') else sharding)
            for k, v in cache.items()}

  def _fill(self, tokens: np.ndarray, positions: np.ndarray, lengths: np.ndarray,
            shared: tuple[cache_lib.Cache, ...], extra: int, sharding
            ) -> tuple[cache_lib.Cache, jax.Array]:
    """Prefills [R, T] right-padded rows (T a bucket) into a cache with
    `extra` more slots; (cache, [R, D] hidden state at each row's last token)."""
    rows, t = tokens.shape
    chunk = min(t, self.prefill_chunk)
    cache = self._new_cache(rows, t + extra, sharding)
    valid = np.arange(t)[None] < lengths[:, None]
    put = lambda x: jax.device_put(x, sharding)  # noqa: E731
    last = put(np.zeros((rows, self.model.config.embed_dim), self.model.dtype))
    last_index = put((lengths - 1).astype(np.int32))
    for start in range(0, t, chunk):
      cut = slice(start, start + chunk)
      cache, last = self._call(
          _prefill, self.model, self.params, put(tokens[:, cut]),
          put(positions[:, cut]), put(valid[:, cut]), shared, cache,
          np.int32(start), last_index, last)
    return cache, last

  def encode_prefix(self, ids: Sequence[int]) -> tuple[cache_lib.Cache, ...]:
    """() for no ids, else (the batch-1 memory of `ids`,), replicated."""
    if not ids:
      return ()
    length = bucket(len(ids), self.prefill_chunk)
    tokens = np.zeros((1, length), np.int32)
    tokens[0, :len(ids)] = ids
    positions = np.arange(length, dtype=np.int32)[None]
    memory, _ = self._fill(tokens, positions, np.array([len(ids)]), (), 0,
                           self._replicated)
    return (memory,)

  def _screen(self) -> Screen:
    """The `Screen` of the output table in `self.params` (made once per
    table: 0.34 GB more for the 270M)."""
    table = self.params['embedder']['input_embedding']
    if self._screen_cache is None or self._screen_cache[0] is not table:
      self._screen_cache = table, self._call(make_screen, table)
    return self._screen_cache[1]

  @functools.cached_property
  def _piece_texts(self) -> list[str]:
    """The text of every token id (for stop strings)."""
    return [self.tok.decode([i]) for i in range(self.tok.vocab_size)]

  @functools.lru_cache(maxsize=8)
  def _stop_tokens(self, stop: tuple[str, ...]) -> np.ndarray:
    """[V] bool: tokens whose own text holds one of `stop`."""
    out = np.zeros(self.model.config.vocab_size, bool)
    if stop:
      for i, text in enumerate(self._piece_texts):
        out[i] = any(s in text for s in stop)
    return out

  def generate(self, prompts: Sequence[str], options: Options, *,
               prefix: str = '', seeds: Sequence[int] | None = None) -> list[str]:
    """Completions of BOS + prefix + prompt for every prompt.

    Args:
      prompts: the texts to continue, in any number.
      options: length, sampling and stop strings (see `Options`).
      prefix: text shared by every prompt, encoded once.
      seeds: one sampling seed per prompt (default 0 for all); unused when
        greedy.

    Returns:
      One completion per prompt, in order: without the prefix, the prompt,
      EOS or anything from the first stop string on.
    """
    out = []
    for ids in self.generate_ids(prompts, options, prefix=prefix, seeds=seeds):
      text = self.tok.decode(ids)
      cuts = [text.find(s) for s in options.stop if s in text]
      out.append(text[:min(cuts)] if cuts else text)
    return out

  def generate_ids(self, prompts: Sequence[str], options: Options, *,
                   prefix: str = '', seeds: Sequence[int] | None = None
                   ) -> list[list[int]]:
    """The new token ids of every prompt (see `generate`), without EOS; a
    stop string is not cut (a token that holds one ends the ids)."""
    prompts = list(prompts)
    seeds = [0] * len(prompts) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(prompts):
      raise ValueError(f'{len(seeds)} seeds for {len(prompts)} prompts.')
    if not prompts:
      return []
    prefix_ids = self.tok.encode(prefix, add_bos=True)
    shared = self.encode_prefix(prefix_ids[:-1])
    offset = len(prefix_ids) - 1
    rows = [prefix_ids[-1:] + ids for ids in self.tok.encode_batch(prompts)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    stop_V = jax.device_put(self._stop_tokens(tuple(options.stop)),
                            self._replicated)
    out: list[list[int]] = [[] for _ in prompts]
    start_time, generated = time.perf_counter(), 0
    with tqdm.tqdm(total=len(prompts), desc='decoding', unit='seq', delay=5,
                   dynamic_ncols=True) as bar:
      for first in range(0, len(order), self.batch_size):
        batch = order[first:first + self.batch_size]
        tokens = self._decode_batch([rows[i] for i in batch],
                                    [seeds[i] for i in batch], offset, shared,
                                    stop_V, options)
        for i, ids in zip(batch, tokens):
          generated += len(ids)
          if self.tok.eos_id in ids:
            ids = ids[:ids.index(self.tok.eos_id)]
          out[i] = ids
        bar.update(len(batch))
        bar.set_postfix(tok_s=f'{generated / (time.perf_counter() - start_time):.1f}')
    return out

  def _decode_batch(self, rows: list[list[int]], seeds: list[int], offset: int,
                    shared: tuple[cache_lib.Cache, ...], stop_V: jax.Array,
                    options: Options) -> list[list[int]]:
    """New token ids of up to `batch_size` rows (their stopping token kept)."""
    real = len(rows)
    lengths = np.ones(self.batch_size, np.int64)
    lengths[:real] = [len(r) for r in rows]
    t = bucket(int(lengths.max()), self.prefill_chunk)
    tokens = np.zeros((self.batch_size, t), np.int32)
    for r, ids in enumerate(rows):
      tokens[r, :len(ids)] = ids
    positions = np.broadcast_to(offset + np.arange(t, dtype=np.int32),
                                tokens.shape)
    n = bucket(options.max_new_tokens, 1 << 30)
    cache, last_BD = self._fill(tokens, positions, lengths, shared, n, self._rows)
    put = lambda x: jax.device_put(x, self._rows)  # noqa: E731
    seeds_B = np.zeros(self.batch_size, np.uint32)
    seeds_B[:real] = np.asarray(seeds, np.int64) % 2**32
    logging.debug('decode: %d rows, bucket %d, %d new', real, t, n)
    screened = takes_screen(self.model, options)
    out_BN, count_B, steps = self._call(
        _decode, self.model, self.params, shared, cache, last_BD,
        put((offset + lengths).astype(np.int32)), put(seeds_B),
        put(np.arange(self.batch_size) >= real), np.int32(t),
        np.int32(options.max_new_tokens), stop_V, np.int32(self.tok.eos_id),
        self._screen() if screened else None, options=options)
    out_BN, count_B = np.asarray(out_BN), np.asarray(count_B)
    self.steps['all'] += int(steps[0])
    self.steps['screened'] += int(steps[0]) if screened else 0
    self.steps['full'] += int(steps[1])
    return [out_BN[r, :count_B[r]].tolist() for r in range(real)]
