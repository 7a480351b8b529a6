"""Hugging Face Gemma 1/2/3 checkpoints (the layout `transformers` saves).

`to_params` is the one place where torch `Linear` layouts become our einsum
layouts, `from_params` its exact inverse (for export); the GGUF reader and
writer rename tensors to and from these names and reuse them.
"""

import json
import math
import pathlib
from typing import Mapping

import numpy as np
import safetensors

from icl_iwl.checkpoints import params as params_lib
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.model import presets
from icl_iwl.model.presets import AttentionType, GemmaConfig

_PREFIXES = ('model.language_model.', 'language_model.model.', 'model.')
_TANH_GELU = ('gelu_pytorch_tanh', 'gelu_tanh', 'gelu')


def _rope(cfg: Mapping, layer_type: str, default_base: float) -> tuple[float, float]:
  """(base, linear scale) for 'full_attention' or 'sliding_attention' layers."""
  params = cfg.get('rope_parameters') or {}
  params = params.get(layer_type, params)
  if layer_type == 'sliding_attention':
    base = params.get('rope_theta', cfg.get('rope_local_base_freq', default_base))
  else:
    base = params.get('rope_theta', cfg.get('rope_theta', default_base))
  scaling = params if 'rope_type' in params else (cfg.get('rope_scaling') or {})
  if scaling.get('rope_type', 'default') not in ('default', 'linear'):
    raise CheckpointError(f'unsupported rope scaling {scaling}')
  return float(base), float(scaling.get('factor', 1.0))


def config_from_hf(cfg: Mapping) -> GemmaConfig:
  """A GemmaConfig from a transformers config.json dict (gemma, gemma2, gemma3)."""
  if cfg.get('model_type') == 'gemma3':
    cfg = cfg['text_config']
  model_type = cfg.get('model_type')
  if model_type not in ('gemma', 'gemma2', 'gemma3_text'):
    raise CheckpointError(f'unsupported model_type {model_type!r}; expected '
                          'gemma, gemma2, gemma3 or gemma3_text')
  act = cfg.get('hidden_activation') or cfg.get('hidden_act', 'gelu_pytorch_tanh')
  if act not in _TANH_GELU:
    raise CheckpointError(f'unsupported activation {act!r}')
  num_layers = cfg['num_hidden_layers']
  layer_types = cfg.get('layer_types')
  if layer_types is None:
    if model_type == 'gemma':
      layer_types = ['full_attention'] * num_layers
    elif model_type == 'gemma2':
      layer_types = ['sliding_attention' if i % 2 == 0 else 'full_attention'
                     for i in range(num_layers)]
    else:
      period = cfg.get('sliding_window_pattern', 6)
      layer_types = ['full_attention' if (i + 1) % period == 0 else
                     'sliding_attention' for i in range(num_layers)]
  head_dim = cfg.get('head_dim') or cfg['hidden_size'] // cfg['num_attention_heads']
  local_base, _ = _rope(cfg, 'sliding_attention', 10_000.0)
  global_base, global_scale = _rope(cfg, 'full_attention', 10_000.0)
  gemma3 = model_type == 'gemma3_text'
  config = GemmaConfig(
      name=f'hf_{model_type}',
      vocab_size=cfg['vocab_size'],
      embed_dim=cfg['hidden_size'],
      hidden_dim=cfg['intermediate_size'],
      num_heads=cfg['num_attention_heads'],
      num_kv_heads=cfg.get('num_key_value_heads', cfg['num_attention_heads']),
      head_dim=head_dim,
      attention_types=tuple(AttentionType.LOCAL if t == 'sliding_attention'
                            else AttentionType.GLOBAL for t in layer_types),
      query_scale=float(cfg.get('query_pre_attn_scalar', head_dim)) ** -0.5,
      sliding_window=cfg.get('sliding_window') if 'sliding_attention' in layer_types else None,
      local_rope_base=local_base,
      global_rope_base=global_base,
      global_rope_scale=global_scale,
      attn_logit_softcap=cfg.get('attn_logit_softcapping'),
      final_logit_softcap=cfg.get('final_logit_softcapping'),
      use_post_norms=model_type != 'gemma',
      use_qk_norm=gemma3,
      transpose_gating_einsum=gemma3,
      norm_eps=cfg.get('rms_norm_eps', 1e-6),
  )
  return presets.find(config)


def _strip(name: str) -> str:
  for prefix in _PREFIXES:
    if name.startswith(prefix):
      return name[len(prefix):]
  return name


def to_params(tensors: Mapping[str, np.ndarray], config: GemmaConfig,
              source: str) -> dict[str, np.ndarray]:
  """HF-named tensors ([out, in] Linear layout) -> our flat param dict.

  Args:
    tensors: e.g. 'model.layers.0.self_attn.q_proj.weight' -> [N*H, D].
    config: the architecture the tensors must fit.
    source: a name for error messages.

  Returns:
    flat {'layer_0/attn/q_einsum/w': [N, D, H], ...}, checked against `config`,
    every array C-contiguous (safetensors.numpy silently scrambles views).

  Raises:
    CheckpointError: naming each tensor that is missing, extra or misshapen.
  """
  c = config
  pool = {_strip(k): v for k, v in tensors.items()}
  n, k, h, d, f = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim, c.hidden_dim

  def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in pool:
      raise CheckpointError(f'{source}: tensor {name} is missing')
    x = pool.pop(name)
    if tuple(x.shape) != shape:
      raise CheckpointError(
          f'{source}: tensor {name} has shape {tuple(x.shape)}, preset '
          f'{c.name!r} expects {shape}')
    return x

  def heads(name: str, num: int) -> np.ndarray:
    """[num*H, D] -> [num, D, H]."""
    return take(name, (num * h, d)).reshape(num, h, d).transpose(0, 2, 1)

  flat = {
      'embedder/input_embedding': take('embed_tokens.weight', (c.vocab_size, d)),
      'final_norm/scale': take('norm.weight', (d,)),
  }
  for i in range(c.num_layers):
    hf, ours = f'layers.{i}.', f'layer_{i}/'
    q = heads(hf + 'self_attn.q_proj.weight', n)
    kk = heads(hf + 'self_attn.k_proj.weight', k)
    v = heads(hf + 'self_attn.v_proj.weight', k)
    if k == n:
      flat[ours + 'attn/qkv_einsum/w'] = np.stack([q, kk, v])
    else:
      flat[ours + 'attn/q_einsum/w'] = q
      flat[ours + 'attn/kv_einsum/w'] = np.stack([kk, v])
    flat[ours + 'attn/attn_vec_einsum/w'] = take(
        hf + 'self_attn.o_proj.weight', (d, n * h)).T.reshape(n, h, d)
    if c.use_qk_norm:
      flat[ours + 'attn/_query_norm/scale'] = take(hf + 'self_attn.q_norm.weight', (h,))
      flat[ours + 'attn/_key_norm/scale'] = take(hf + 'self_attn.k_norm.weight', (h,))
    gating = np.stack([take(hf + 'mlp.gate_proj.weight', (f, d)),
                       take(hf + 'mlp.up_proj.weight', (f, d))])
    flat[ours + 'mlp/gating_einsum'] = (
        gating if c.transpose_gating_einsum else gating.transpose(0, 2, 1))
    flat[ours + 'mlp/linear'] = take(hf + 'mlp.down_proj.weight', (d, f)).T
    flat[ours + 'pre_attention_norm/scale'] = take(hf + 'input_layernorm.weight', (d,))
    if c.use_post_norms:
      flat[ours + 'post_attention_norm/scale'] = take(
          hf + 'post_attention_layernorm.weight', (d,))
      flat[ours + 'pre_ffw_norm/scale'] = take(hf + 'pre_feedforward_layernorm.weight', (d,))
      flat[ours + 'post_ffw_norm/scale'] = take(
          hf + 'post_feedforward_layernorm.weight', (d,))
    else:  # Gemma 1 names its pre-MLP norm `post_attention_layernorm`.
      flat[ours + 'pre_ffw_norm/scale'] = take(hf + 'post_attention_layernorm.weight', (d,))
  pool.pop('lm_head.weight', None)  # Tied to the embedding.
  if pool:
    raise CheckpointError(
        f'{source}: unexpected tensors for preset {c.name!r}: {sorted(pool)[:10]}')
  flat = {k: np.ascontiguousarray(v) for k, v in flat.items()}
  params_lib.check(flat, config, source)
  return flat


def from_params(flat: Mapping[str, np.ndarray], config: GemmaConfig,
                ) -> dict[str, np.ndarray]:
  """Our flat param dict -> HF-named tensors; exactly the inverse of `to_params`.

  Args:
    flat: {'layer_0/attn/q_einsum/w': [N, D, H], ...} of a model without
      LoRA factors (merge them first), checked against `config`.
    config: its architecture.

  Returns:
    {'model.layers.0.self_attn.q_proj.weight': [N*H, D], ...} in the
    `Linear` [out, in] layout transformers saves, C-contiguous, without
    'lm_head.weight' (tied to the embedding).
  """
  c = config
  params_lib.check(flat, c, 'the params to export')
  n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim
  tensors = {
      'embed_tokens.weight': flat['embedder/input_embedding'],
      'norm.weight': flat['final_norm/scale'],
  }

  def linear(w_NDH: np.ndarray, num: int) -> np.ndarray:
    """[num, D, H] -> [num*H, D]."""
    return w_NDH.transpose(0, 2, 1).reshape(num * h, d)

  for i in range(c.num_layers):
    hf, ours = f'layers.{i}.', f'layer_{i}/'
    if k == n:
      q, kk, v = flat[ours + 'attn/qkv_einsum/w']
    else:
      q = flat[ours + 'attn/q_einsum/w']
      kk, v = flat[ours + 'attn/kv_einsum/w']
    tensors[hf + 'self_attn.q_proj.weight'] = linear(q, n)
    tensors[hf + 'self_attn.k_proj.weight'] = linear(kk, k)
    tensors[hf + 'self_attn.v_proj.weight'] = linear(v, k)
    tensors[hf + 'self_attn.o_proj.weight'] = (
        flat[ours + 'attn/attn_vec_einsum/w'].reshape(n * h, d).T)
    if c.use_qk_norm:
      tensors[hf + 'self_attn.q_norm.weight'] = flat[ours + 'attn/_query_norm/scale']
      tensors[hf + 'self_attn.k_norm.weight'] = flat[ours + 'attn/_key_norm/scale']
    gating = flat[ours + 'mlp/gating_einsum']
    gate, up = gating if c.transpose_gating_einsum else gating.transpose(0, 2, 1)
    tensors[hf + 'mlp.gate_proj.weight'] = gate
    tensors[hf + 'mlp.up_proj.weight'] = up
    tensors[hf + 'mlp.down_proj.weight'] = flat[ours + 'mlp/linear'].T
    tensors[hf + 'input_layernorm.weight'] = flat[ours + 'pre_attention_norm/scale']
    if c.use_post_norms:
      tensors[hf + 'post_attention_layernorm.weight'] = flat[ours + 'post_attention_norm/scale']
      tensors[hf + 'pre_feedforward_layernorm.weight'] = flat[ours + 'pre_ffw_norm/scale']
      tensors[hf + 'post_feedforward_layernorm.weight'] = flat[ours + 'post_ffw_norm/scale']
    else:  # Gemma 1 names its pre-MLP norm `post_attention_layernorm`.
      tensors[hf + 'post_attention_layernorm.weight'] = flat[ours + 'pre_ffw_norm/scale']
  return {'model.' + name: np.ascontiguousarray(x) for name, x in tensors.items()}


def model_type(config: GemmaConfig) -> str:
  """The transformers text model type of an architecture: Gemma 3 has
  QK-norm, Gemma 2 post-norms, Gemma 1 neither."""
  if config.use_qk_norm:
    return 'gemma3_text'
  return 'gemma2' if config.use_post_norms else 'gemma'


_CAUSAL_LM = {'gemma': 'GemmaForCausalLM', 'gemma2': 'Gemma2ForCausalLM',
              'gemma3_text': 'Gemma3ForCausalLM'}


def hf_config(config: GemmaConfig, special_ids: Mapping[str, int], dtype: str,
              ) -> dict:
  """The config.json of `config` for its transformers class; `config_from_hf`
  reads it back to the same architecture.

  Raises:
    CheckpointError: if the transformers class cannot state the architecture
      (Gemma 1 with a query scale other than head_dim**-0.5, softcaps or
      sliding windows; Gemma 1/2 with different local and global RoPE).
  """
  c = config
  kind = model_type(c)
  local = [t == AttentionType.LOCAL for t in c.attention_types]
  problems = []
  if kind != 'gemma3_text' and (c.local_rope_base, 1.0) != (
      c.global_rope_base, c.global_rope_scale) and any(local):
    problems.append('local layers with another RoPE than global layers')
  if kind == 'gemma':
    if not math.isclose(c.query_scale, c.head_dim**-0.5, rel_tol=1e-6):
      problems.append(f'query_scale {c.query_scale} != head_dim**-0.5')
    if any(local) or c.attn_logit_softcap or c.final_logit_softcap:
      problems.append('sliding windows or softcaps')
  if problems:
    raise CheckpointError(f'transformers {_CAUSAL_LM[kind]} cannot state '
                          f'{c.name!r}: {"; ".join(problems)}')

  def rope(base: float, scale: float) -> dict:
    if scale == 1.0:
      return {'rope_type': 'default', 'rope_theta': base}
    return {'rope_type': 'linear', 'rope_theta': base, 'factor': scale}

  out = {
      'architectures': [_CAUSAL_LM[kind]],
      'model_type': kind,
      'vocab_size': c.vocab_size,
      'hidden_size': c.embed_dim,
      'intermediate_size': c.hidden_dim,
      'num_hidden_layers': c.num_layers,
      'num_attention_heads': c.num_heads,
      'num_key_value_heads': c.num_kv_heads,
      'head_dim': c.head_dim,
      'hidden_activation': 'gelu_pytorch_tanh',
      'rms_norm_eps': c.norm_eps,
      'tie_word_embeddings': True,
      'dtype': dtype,
      **{f'{name}_token_id': special_ids[name] for name in ('pad', 'eos', 'bos')},
  }
  if kind == 'gemma':
    out['rope_parameters'] = rope(c.global_rope_base, c.global_rope_scale)
    return out
  scalar = c.query_scale**-2
  out.update(
      query_pre_attn_scalar=round(scalar) if math.isclose(scalar, round(scalar)) else scalar,
      sliding_window=c.sliding_window or 4096,  # Unused without local layers.
      layer_types=['sliding_attention' if l else 'full_attention' for l in local],
      attn_logit_softcapping=c.attn_logit_softcap,
      final_logit_softcapping=c.final_logit_softcap,
  )
  if kind == 'gemma2':
    out['rope_parameters'] = rope(c.global_rope_base, c.global_rope_scale)
  else:
    out['rope_parameters'] = {
        'full_attention': rope(c.global_rope_base, c.global_rope_scale),
        'sliding_attention': rope(c.local_rope_base, 1.0)}
  return out


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    with safetensors.safe_open(str(path), framework='flax') as f:
      return {k: np.asarray(f.get_tensor(k)) for k in f.keys()}
  except Exception as e:  # safetensors raises several unrelated types.
    raise CheckpointError(f'{path}: not a readable safetensors file ({e})') from e


def load(path: str | pathlib.Path, config: GemmaConfig | None = None,
         ) -> tuple[GemmaConfig, params_lib.Params]:
  """Loads a transformers Gemma checkpoint directory.

  Args:
    path: directory with config.json and *.safetensors (sharded or not).
    config: the architecture to load into (checked against config.json's);
      default: config.json's own.

  Returns:
    (config, nested param tree of numpy arrays in the checkpoint's dtype).

  Raises:
    CheckpointError: if a file is missing or unreadable, the architecture
      differs from `config` (naming every differing field), or a tensor is
      missing, extra or misshapen.
  """
  path = pathlib.Path(path)
  config_file = path / 'config.json'
  if not config_file.is_file():
    raise CheckpointError(f'{path}: not a Hugging Face checkpoint directory '
                          '(no config.json)')
  try:
    hf_config = json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f'{config_file}: invalid JSON ({e})') from e
  found = config_from_hf(hf_config)
  if config is None:
    config = found
  else:
    params_lib.check_architecture(found, config, str(path))
  files = sorted(path.glob('*.safetensors'))
  if not files:
    raise CheckpointError(f'{path}: no *.safetensors files')
  tensors = {}
  for file in files:
    tensors.update(_read_safetensors(file))
  return config, params_lib.unflatten(to_params(tensors, config, str(path)))
