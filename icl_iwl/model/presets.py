"""Gemma architecture presets as frozen dataclasses, one registry entry each.

Numbers follow the published Gemma 1/2/3 configurations (text-only towers).
`tiny` is a test preset with the real vocabulary size, so it runs with the real
tokenizer.
"""

import dataclasses
import enum
import math
from typing import Any

from icl_iwl import registry

# The weights LoRA adapts by default (model/lora.py; configs' model.lora.targets).
LORA_TARGETS = ('q_einsum', 'kv_einsum', 'qkv_einsum', 'attn_vec_einsum',
                'gating_einsum', 'linear')


class AttentionType(enum.Enum):
  GLOBAL = 'global'
  LOCAL = 'local'  # Sliding window.


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
  """Architecture of one Gemma model.

  Attributes:
    name: preset name.
    vocab_size: V.
    embed_dim: D, the residual width.
    hidden_dim: F, the GeGLU width.
    num_heads: N query heads.
    num_kv_heads: K key/value heads (N % K == 0; K == N uses one `qkv_einsum`).
    head_dim: H.
    attention_types: one entry per layer.
    query_scale: multiplier applied to queries before the dot product.
    sliding_window: keys with q_pos - k_pos >= window are masked on local layers.
    local_rope_base / global_rope_base: RoPE wavelength base per layer type.
    global_rope_scale: linear position interpolation on global layers.
    attn_logit_softcap: cap * tanh(logits / cap) on attention logits (Gemma 2).
    final_logit_softcap: the same on output logits (Gemma 2).
    use_post_norms: RMSNorm after attention and after the MLP (Gemma 2/3).
    use_qk_norm: RMSNorm on queries and keys (Gemma 3).
    transpose_gating_einsum: gating weights stored as (2, F, D), else (2, D, F).
    norm_eps: RMSNorm epsilon.
  """

  name: str
  vocab_size: int
  embed_dim: int
  hidden_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  attention_types: tuple[AttentionType, ...]
  query_scale: float
  sliding_window: int | None = None
  local_rope_base: float = 10_000.0
  global_rope_base: float = 10_000.0
  global_rope_scale: float = 1.0
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  use_post_norms: bool = False
  use_qk_norm: bool = False
  transpose_gating_einsum: bool = False
  norm_eps: float = 1e-6

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f'{self.name}: num_heads={self.num_heads} is not a multiple of '
          f'num_kv_heads={self.num_kv_heads}.'
      )
    if AttentionType.LOCAL in self.attention_types and not self.sliding_window:
      raise ValueError(f'{self.name}: local layers need a sliding_window.')

  @property
  def num_layers(self) -> int:
    return len(self.attention_types)


PRESETS = registry.Registry('model preset')

_G, _L = AttentionType.GLOBAL, AttentionType.LOCAL


def _gemma3_types(num_layers: int) -> tuple[AttentionType, ...]:
  """Five local layers, then one global, repeated."""
  return tuple(_G if (i + 1) % 6 == 0 else _L for i in range(num_layers))


def _gemma1(name, num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads):
  return GemmaConfig(
      name=name,
      vocab_size=256_128,
      embed_dim=embed_dim,
      hidden_dim=hidden_dim,
      num_heads=num_heads,
      num_kv_heads=num_kv_heads,
      head_dim=256,
      attention_types=(_G,) * num_layers,
      query_scale=256**-0.5,
  )


def _gemma2(name, num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads,
            transpose_gating_einsum):
  return GemmaConfig(
      name=name,
      vocab_size=256_128,
      embed_dim=embed_dim,
      hidden_dim=hidden_dim,
      num_heads=num_heads,
      num_kv_heads=num_kv_heads,
      head_dim=256,
      attention_types=(_L, _G) * (num_layers // 2),
      query_scale=256**-0.5,
      sliding_window=4096,
      attn_logit_softcap=50.0,
      final_logit_softcap=30.0,
      use_post_norms=True,
      transpose_gating_einsum=transpose_gating_einsum,
  )


def _gemma3(name, num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads,
            sliding_window, global_rope_scale):
  return GemmaConfig(
      name=name,
      vocab_size=262_144,
      embed_dim=embed_dim,
      hidden_dim=hidden_dim,
      num_heads=num_heads,
      num_kv_heads=num_kv_heads,
      head_dim=256,
      attention_types=_gemma3_types(num_layers),
      query_scale=256**-0.5,
      sliding_window=sliding_window,
      global_rope_base=1_000_000.0,
      global_rope_scale=global_rope_scale,
      use_post_norms=True,
      use_qk_norm=True,
      transpose_gating_einsum=True,
  )


PRESETS.register('gemma1_2b')(lambda: _gemma1('gemma1_2b', 18, 2048, 16384, 8, 1))
PRESETS.register('gemma1_7b')(
    lambda: _gemma1('gemma1_7b', 28, 3072, 24576, 16, 16))
PRESETS.register('gemma2_2b')(
    lambda: _gemma2('gemma2_2b', 26, 2304, 9216, 8, 4, False))
PRESETS.register('gemma2_9b')(
    lambda: _gemma2('gemma2_9b', 42, 3584, 14336, 16, 8, True))
PRESETS.register('gemma3_270m')(
    lambda: _gemma3('gemma3_270m', 18, 640, 2048, 4, 1, 512, 1.0))
PRESETS.register('gemma3_1b')(
    lambda: _gemma3('gemma3_1b', 26, 1152, 6912, 4, 1, 512, 1.0))
PRESETS.register('gemma3_4b')(
    lambda: _gemma3('gemma3_4b', 34, 2560, 10240, 8, 4, 1024, 8.0))
PRESETS.register('gemma3_12b')(
    lambda: _gemma3('gemma3_12b', 48, 3840, 15360, 16, 8, 1024, 8.0))


@PRESETS.register('tiny')
def tiny() -> GemmaConfig:
  """Two layers (local, global) at Gemma 3's vocabulary: runs with the real tokenizer."""
  return dataclasses.replace(
      _gemma3('tiny', 2, 64, 128, 2, 1, 16, 1.0),
      attention_types=(_L, _G),
      head_dim=32,
      query_scale=32**-0.5,
  )


def get(name: str) -> GemmaConfig:
  """The preset called `name`; unknown names list the close valid ones."""
  return PRESETS.get(name)()


# Fields that name a config or choose how our params store it, rather than
# describe the network: checkpoints are compared without them.
_NOT_ARCHITECTURE = ('name', 'transpose_gating_einsum')


def mismatches(a: GemmaConfig, b: GemmaConfig) -> dict[str, tuple[Any, Any]]:
  """{field: (a's value, b's value)} for every architecture field that differs.

  Floats are compared to a relative 1e-6 (GGUF stores them as float32).
  """
  out = {}
  for field in dataclasses.fields(GemmaConfig):
    if field.name in _NOT_ARCHITECTURE:
      continue
    x, y = getattr(a, field.name), getattr(b, field.name)
    if isinstance(x, float) and isinstance(y, float):
      same = math.isclose(x, y, rel_tol=1e-6)
    else:
      same = x == y
    if not same:
      out[field.name] = (x, y)
  return out


def find(config: GemmaConfig) -> GemmaConfig:
  """The registered preset with `config`'s architecture, else `config`."""
  for name in PRESETS.names():
    if not mismatches(config, get(name)):
      return get(name)
  return config
