"""Our Gemma (1, 2 and 3) in Flax Linen, with the gemma library's param names.

Dimension letters: see `layers.py` (B, T, S, N, K, G, H, D, F, V, C); L layers,
M memory batch (B, or 1 for a prefix shared by the batch).

With `scan_layers`, the layers are stacked and run by `nn.scan` one at a time
(FSDP gathers one layer's weights at a time; a layer's attention type is a
scanned flag when the types differ); `scan.py` converts between the
per-layer tree below and the stacked one (`layers/...`, each leaf [L, ...]).

Param tree (identical to gemma checkpoints):
  embedder/input_embedding                       [V, D]
  layer_i/pre_attention_norm/scale               [D]
  layer_i/attn/q_einsum/w                        [N, D, H]     (K < N)
  layer_i/attn/kv_einsum/w                       [2, K, D, H]  (K < N)
  layer_i/attn/qkv_einsum/w                      [3, N, D, H]  (K == N)
  layer_i/attn/_query_norm/scale, _key_norm/scale [H]          (Gemma 3)
  layer_i/attn/attn_vec_einsum/w                 [N, H, D]
  layer_i/post_attention_norm/scale              [D]           (Gemma 2/3)
  layer_i/pre_ffw_norm/scale                     [D]
  layer_i/mlp/gating_einsum                      [2, F, D] or [2, D, F]
  layer_i/mlp/linear                             [F, D]
  layer_i/post_ffw_norm/scale                    [D]           (Gemma 2/3)
  final_norm/scale                               [D]
"""

from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

from icl_iwl.model import cache as cache_lib
from icl_iwl.model import layers
from icl_iwl.model import lora as lora_lib
from icl_iwl.model.presets import AttentionType, GemmaConfig

Dtype = Any
K_MASK = -2.3819763e38  # Logit of a masked key: exp() underflows to exactly 0.


def _constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
  """Logical sharding constraint on an activation (no-op outside a mesh)."""
  return nn.with_logical_constraint(x, axes)


class Attention(nn.Module):
  """Grouped-query attention over an optional memory plus the current tokens.

  `attn_type` None: the call's `local` flag says whether this layer is a
  sliding-window one (scanned layers of mixed types).
  """

  config: GemmaConfig
  attn_type: AttentionType | None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  lora: layers.LoraConfig | None = None

  def setup(self):
    c = self.config
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, lora=self.lora)
    if c.num_kv_heads == c.num_heads:
      self.qkv_einsum = layers.Einsum(
          (3, c.num_heads, c.embed_dim, c.head_dim),
          (None, 'heads', 'embed', 'head_dim'), **dt)
    else:
      self.q_einsum = layers.Einsum(
          (c.num_heads, c.embed_dim, c.head_dim),
          ('heads', 'embed', 'head_dim'), **dt)
      self.kv_einsum = layers.Einsum(
          (2, c.num_kv_heads, c.embed_dim, c.head_dim),
          (None, 'kv_heads', 'embed', 'head_dim'), **dt)
    self.attn_vec_einsum = layers.Einsum(
        (c.num_heads, c.head_dim, c.embed_dim),
        ('heads', 'head_dim', 'embed'), **dt)
    if c.use_qk_norm:
      self._query_norm = layers.RMSNorm(c.norm_eps, self.param_dtype)
      self._key_norm = layers.RMSNorm(c.norm_eps, self.param_dtype)

  def __call__(
      self,
      x_BTD: jax.Array,
      positions_BT: jax.Array,
      mask_BTT: jax.Array,
      memory: cache_lib.Memory,
      local: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Attends from the T tokens to memory slots and to themselves.

    Args:
      x_BTD: [B, T, D] normed inputs.
      positions_BT: [B, T] positions of the inputs.
      mask_BTT: [B, T, T] which inputs each input may attend to.
      memory: this layer's {'k', 'v': [M, S, K, H], 'positions', 'mask': [M, S]},
        a sequence of them (attended to as one, e.g. a shared batch-1 prefix
        and a batch-B cache), or None. A slot is visible if it is real and
        its position <= the query's.
      local: [] bool, whether this is a sliding-window layer (only read when
        `attn_type` is None).

    Returns:
      ([B, T, D] output, {'k', 'v': [B, T, K, H]} of the T tokens).
    """
    c = self.config
    # Stacked projections come out as [B, T, C, ...], not [C, B, T, ...]: the
    # token-major layout of the matmul, with no transposing copy (CPU).
    if c.num_kv_heads == c.num_heads:
      qkv_BTCNH = self.qkv_einsum('BTD,CNDH->BTCNH', x_BTD)
      q_BTNH, k_BTKH, v_BTKH = (qkv_BTCNH[:, :, i] for i in range(3))
    else:
      q_BTNH = self.q_einsum('BTD,NDH->BTNH', x_BTD)
      kv_BTCKH = self.kv_einsum('BTD,CKDH->BTCKH', x_BTD)
      k_BTKH, v_BTKH = kv_BTCKH[:, :, 0], kv_BTCKH[:, :, 1]
    if c.use_qk_norm:
      q_BTNH = self._query_norm(q_BTNH)
      k_BTKH = self._key_norm(k_BTKH)
    if self.attn_type is not None:  # Static: a Python bool.
      local = self.attn_type == AttentionType.LOCAL
      base = c.local_rope_base if local else c.global_rope_base
      scale = 1.0 if local else c.global_rope_scale
    else:  # Traced: [] bool.
      base = jnp.where(local, c.local_rope_base, c.global_rope_base)
      scale = jnp.where(local, 1.0, c.global_rope_scale)
    q_BTNH = layers.apply_rope(q_BTNH, positions_BT, base, scale) * jnp.asarray(
        c.query_scale, self.dtype)
    k_BTKH = layers.apply_rope(k_BTKH, positions_BT, base, scale)
    q_BTNH = _constrain(q_BTNH, ('batch', 'length', 'act_heads', None))

    b, t, n, h = q_BTNH.shape
    q_BTKGH = q_BTNH.reshape(b, t, c.num_kv_heads, n // c.num_kv_heads, h)
    memories = cache_lib.as_tuple(memory)
    attend = lambda mems: self._attend(q_BTKGH, k_BTKH, v_BTKH, positions_BT,
                                       mask_BTT, mems, local)
    # A sliding-window layer sees at most window + T - 1 slots of a memory:
    # attend to those, gathered, when a memory is longer (the full memory
    # only if they do not fit, e.g. rows far apart in position).
    size = c.sliding_window + t - 1 if local is not False else None
    if local is not False and any(m['k'].shape[1] > size for m in memories):
      windows = [cache_lib.window(m, positions_BT, mask_BTT, c.sliding_window, size)
                 if m['k'].shape[1] > size else (m, True) for m in memories]
      fits = jnp.all(jnp.asarray([f for _, f in windows]))
      enc_BTKGH = jax.lax.cond(fits & local, attend, lambda _: attend(memories),
                               tuple(w for w, _ in windows))
    else:
      enc_BTKGH = attend(memories)
    out_BTD = self.attn_vec_einsum('BTNH,NHD->BTD', enc_BTKGH.reshape(b, t, n, h))
    return out_BTD, {'k': k_BTKH, 'v': v_BTKH}

  def _attend(self, q_BTKGH, k_BTKH, v_BTKH, positions_BT, mask_BTT,
              memories: tuple[cache_lib.Cache, ...],
              local: bool | jax.Array) -> jax.Array:
    """[B, T, K, G, H]: softmax attention of the queries over the memories'
    slots and the T tokens' own keys (see `__call__`; `local` a bool or a
    traced [] bool)."""
    c = self.config
    b = q_BTKGH.shape[0]
    # [B, T, K, G, T]
    logits = layers.einsum('BTKGH,BSKH->BTKGS', q_BTKGH, k_BTKH, self.dtype,
                           jnp.float32)
    mask_BTS, key_pos_BS = mask_BTT, positions_BT
    for mem in reversed(memories):  # Keys in order: memories, then the tokens.
      # [B, T, K, G, S]
      mem_logits = self._memory_einsum('BTKGH,{}SKH->BTKGS', q_BTKGH, mem['k'],
                                       jnp.float32)
      logits = jnp.concatenate([mem_logits, logits], axis=-1)
      mem_pos_BS = jnp.broadcast_to(mem['positions'], (b, mem['k'].shape[1]))
      mem_mask_BTS = mem['mask'][:, None, :] & (
          mem_pos_BS[:, None, :] <= positions_BT[:, :, None])
      mask_BTS = jnp.concatenate([mem_mask_BTS, mask_BTS], axis=-1)
      key_pos_BS = jnp.concatenate([mem_pos_BS, key_pos_BS], axis=-1)
    if c.attn_logit_softcap is not None:
      logits = jnp.tanh(logits / c.attn_logit_softcap) * c.attn_logit_softcap
    if local is not False:
      window_BTS = key_pos_BS[:, None, :] > positions_BT[:, :, None] - c.sliding_window
      mask_BTS = mask_BTS & (window_BTS if local is True else window_BTS | ~local)
    logits = jnp.where(mask_BTS[:, :, None, None, :], logits, K_MASK)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)

    if not memories:
      enc_BTKGH = layers.einsum('BTKGS,BSKH->BTKGH', probs, v_BTKH, self.dtype)
    else:
      s = sum(mem['v'].shape[1] for mem in memories)
      enc_BTKGH = layers.einsum(
          'BTKGS,BSKH->BTKGH', probs[..., s:], v_BTKH, self.dtype, jnp.float32)
      start = 0
      for mem in memories:
        end = start + mem['v'].shape[1]
        enc_BTKGH += self._memory_einsum(
            'BTKGS,{}SKH->BTKGH', probs[..., start:end], mem['v'], jnp.float32)
        start = end
      enc_BTKGH = enc_BTKGH.astype(self.dtype)
    return enc_BTKGH

  def _memory_einsum(self, eqn: str, x: jax.Array, mem: jax.Array, out_dtype):
    """Contracts with a memory of batch M = B, or M = 1 without broadcasting."""
    if mem.shape[0] == 1 and x.shape[0] != 1:
      return layers.einsum(eqn.format(''), x, mem[0], self.dtype, out_dtype)
    return layers.einsum(eqn.format('B'), x, mem, self.dtype, out_dtype)


class FeedForward(nn.Module):
  """GeGLU MLP (tanh-approximated GELU)."""

  config: GemmaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  lora: layers.LoraConfig | None = None

  @nn.compact
  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    """[B, T, D] -> [B, T, D]."""
    c = self.config
    init = nn.initializers.normal()
    if c.transpose_gating_einsum:
      shape, axes, eqn = (2, c.hidden_dim, c.embed_dim), (None, 'mlp', 'embed'), 'BTD,CFD->BTCF'
    else:
      shape, axes, eqn = (2, c.embed_dim, c.hidden_dim), (None, 'embed', 'mlp'), 'BTD,CDF->BTCF'
    gating = self.param('gating_einsum', nn.with_logical_partitioning(init, axes),
                        shape, self.param_dtype)
    linear = self.param('linear', nn.with_logical_partitioning(init, ('mlp', 'embed')),
                        (c.hidden_dim, c.embed_dim), self.param_dtype)
    gating = layers.with_lora(self, 'gating_einsum', 'gating_einsum', gating, eqn,
                              self.lora)
    linear = layers.with_lora(self, 'linear', 'linear', linear, 'BTF,FD->BTD',
                              self.lora)
    # [B, T, 2, F]: gate and up side by side per token, so the GeGLU reads
    # them contiguously (a [2, B, T, F] result costs a transposing copy on CPU).
    gate_BTCF = layers.einsum(eqn, x_BTD, gating, self.dtype)
    h_BTF = nn.gelu(gate_BTCF[..., 0, :], approximate=True) * gate_BTCF[..., 1, :]
    h_BTF = _constrain(h_BTF, ('batch', 'length', 'act_mlp'))
    return layers.einsum('BTF,FD->BTD', h_BTF, linear, self.dtype)


class Block(nn.Module):
  """Pre-norm (and, Gemma 2/3, post-norm) attention + MLP residual block
  (`attn_type` None: the call's `local` flag gives it; see `Attention`)."""

  config: GemmaConfig
  attn_type: AttentionType | None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  lora: layers.LoraConfig | None = None

  def setup(self):
    c = self.config
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, lora=self.lora)
    norm = lambda: layers.RMSNorm(c.norm_eps, self.param_dtype)  # noqa: E731
    self.pre_attention_norm = norm()
    self.attn = Attention(c, self.attn_type, **dt)
    self.pre_ffw_norm = norm()
    self.mlp = FeedForward(c, **dt)
    if c.use_post_norms:
      self.post_attention_norm = norm()
      self.post_ffw_norm = norm()

  def __call__(self, x_BTD, positions_BT, mask_BTT, memory_kv=(), memory_slots=(),
               local=None):
    """[B, T, D] -> ([B, T, D], {'k', 'v': [B, T, K, H]} of the T tokens).

    memory_kv: per memory, this layer's {'k', 'v': [M, S, K, H]} (a tuple,
      empty without memory);
    memory_slots: per memory, {'positions', 'mask': [M, S]};
    local: [] bool (see `Attention`).
    The two memory parts come apart so that a layer scan slices the first.
    """
    memory = tuple(dict(slots, **kv) for kv, slots in zip(memory_kv, memory_slots))
    attn_BTD, kv = self.attn(
        self.pre_attention_norm(x_BTD), positions_BT, mask_BTT, memory or None, local)
    if self.config.use_post_norms:
      attn_BTD = self.post_attention_norm(attn_BTD)
    x_BTD = x_BTD + attn_BTD
    mlp_BTD = self.mlp(self.pre_ffw_norm(x_BTD))
    if self.config.use_post_norms:
      mlp_BTD = self.post_ffw_norm(mlp_BTD)
    x_BTD = _constrain(x_BTD + mlp_BTD, ('batch', 'length', 'act_embed'))
    return x_BTD, kv


# Rematerialization policies of a block (`Transformer.remat`): what the
# backward pass keeps from the forward pass instead of recomputing it.
REMAT_POLICIES = {
    'none': None,  # Keep everything (no remat).
    'full': jax.checkpoint_policies.nothing_saveable,  # Keep block inputs only.
    # Keep the weight matmuls' outputs, recompute the rest (MaxText 'minimal').
    'save_dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _block_class(remat: str, scanned: bool) -> type[nn.Module]:
  """`Block`, rematerialized by the policy named `remat`."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f'Unknown remat {remat!r}; use one of {sorted(REMAT_POLICIES)}.')
  if remat == 'none':
    return Block
  # Inside a scan, CSE cannot undo the remat: skip the barrier (as MaxText).
  return nn.remat(Block, policy=REMAT_POLICIES[remat], prevent_cse=not scanned)


class Transformer(nn.Module):
  """Gemma decoder. Weights in `param_dtype`, compute in `dtype`; optional
  LoRA adapters (`lora`), rematerialization of each block (`remat`: a name in
  `REMAT_POLICIES`) and layers stacked and scanned (`scan_layers`).

  Call it on tokens to get logits (or hidden states) and the keys/values of
  those tokens; pass the keys/values of earlier tokens back as `memory`
  (see `cache.py`) for KV-cache decoding or to score many continuations of
  one shared prefix.
  """

  config: GemmaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: str = 'none'
  lora: layers.LoraConfig | None = None
  scan_layers: bool = False

  def setup(self):
    c = self.config
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.embedder = layers.Embedder(c.vocab_size, c.embed_dim, **dt)
    if self.scan_layers:
      self.stack = self._stack()
    else:
      block = _block_class(self.remat, scanned=False)
      self.blocks = [
          block(c, attn_type, name=f'layer_{i}', lora=self.lora, **dt)
          for i, attn_type in enumerate(c.attention_types)
      ]
    self.final_norm = layers.RMSNorm(c.norm_eps, self.param_dtype)

  def __call__(
      self,
      tokens_BT: jax.Array,
      positions_BT: jax.Array,
      mask_BTT: jax.Array,
      memory: cache_lib.Memory = None,
      return_hidden: bool = False,
  ) -> tuple[jax.Array, cache_lib.Cache]:
    """Runs the model.

    Args:
      tokens_BT: [B, T] token ids.
      positions_BT: [B, T] positions (restart at 0 in each packed segment).
      mask_BTT: [B, T, T] bool, e.g. `cache.causal_mask(segment_ids)`.
      memory: keys/values of earlier tokens, a `cache.Cache` of batch B or 1,
        or a sequence of them (earlier tokens first).
      return_hidden: return final-normed hidden states instead of logits.

    Returns:
      ([B, T, V] float32 logits or [B, T, D] float32 hidden, {'k', 'v':
      [L, B, T, K, H]}).
    """
    # The residual stream is float32 at any compute dtype (as torch autocast
    # keeps it): the blocks' matmuls read it cast, their outputs add in f32.
    x_BTD = _constrain(self.embedder.encode(tokens_BT).astype(jnp.float32),
                       ('batch', 'length', 'act_embed'))
    memories = cache_lib.as_tuple(memory)
    memory_kv = tuple({k: m[k] for k in ('k', 'v')} for m in memories)  # [L, ...]
    slots = tuple({k: m[k] for k in ('positions', 'mask')} for m in memories)
    if self.scan_layers:
      local_L = jnp.asarray([t == AttentionType.LOCAL for t in self.config.attention_types])
      x_BTD, kv = self.stack(x_BTD, positions_BT, mask_BTT, memory_kv, slots, local_L)
    else:
      ks, vs = [], []
      for i, block in enumerate(self.blocks):
        layer_kv = tuple({k: m[k][i] for k in ('k', 'v')} for m in memory_kv)
        x_BTD, kv = block(x_BTD, positions_BT, mask_BTT, layer_kv, slots)
        ks.append(kv['k'])
        vs.append(kv['v'])
      kv = {'k': jnp.stack(ks), 'v': jnp.stack(vs)}
    x_BTD = self.final_norm(x_BTD)
    if return_hidden:
      return x_BTD, kv
    return self.logits(x_BTD), kv

  def _stack(self) -> nn.Module:
    """The L layers as one scanned block, params stacked on a leading
    'layers' axis (never sharded). The attention type is static when all
    layers share it, else the scanned `local` flag."""
    c = self.config
    types = set(c.attention_types)
    scanned = nn.scan(
        _block_class(self.remat, scanned=True),
        variable_axes={'params': 0, lora_lib.MERGED: 0}, split_rngs={'params': True},
        in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast, 0),
        length=c.num_layers, metadata_params={nn.PARTITION_NAME: 'layers'})
    return scanned(c, c.attention_types[0] if len(types) == 1 else None,
                   dtype=self.dtype, param_dtype=self.param_dtype, lora=self.lora,
                   name='layers')  # scan.STACKED

  def logits(self, x_BTD: jax.Array) -> jax.Array:
    """[..., D] final hidden states -> [..., V] float32 logits."""
    logits = self.embedder.decode(x_BTD)
    cap = self.config.final_logit_softcap
    if cap is not None:
      logits = jnp.tanh(logits / cap) * cap
    return logits


def abstract_params(model: Transformer) -> Any:
  """The model's params as ShapeDtypeStructs, boxed with their logical axes."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), tokens, tokens, jnp.ones((1, 1, 1), bool)))
  return variables['params']


def init_params(model: Transformer, rng: jax.Array) -> Any:
  """Random params (unboxed); jit it with out_shardings to create them sharded.

  A scanned model gets the per-layer model's params of the same `rng`,
  stacked: both layouts start from the same weights.
  """
  if model.scan_layers:
    from icl_iwl.model import scan  # pylint: disable=g-import-not-at-top
    return scan.stack(init_params(model.clone(scan_layers=False, remat='none'), rng),
                      model.config)
  tokens = jnp.zeros((1, 1), jnp.int32)
  return nn.unbox(model.init(rng, tokens, tokens, jnp.ones((1, 1, 1), bool))['params'])
