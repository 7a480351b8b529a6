"""Loaders: tiny random transformers models, saved as safetensors or written
as GGUF files, round-trip to identical logits; a GGUF is read once; a
checkpoint of another architecture than the preset, bad files and damaged
caches fail or rebuild with messages that name the problem."""

import json
import logging
import re

import gguf as gguf_lib
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from icl_iwl import config_lib
from icl_iwl import paths
from icl_iwl.checkpoints import gguf
from icl_iwl.checkpoints import gguf_file
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints import load
from icl_iwl.checkpoints import params as params_lib
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.data import tokenizer
from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import presets

_COMMON = dict(vocab_size=211, hidden_size=64, intermediate_size=96,
               num_attention_heads=4, head_dim=16, rms_norm_eps=1e-6)


def _gemma3(num_kv_heads=2):
  return transformers.Gemma3TextConfig(
      **_COMMON, num_hidden_layers=6, num_key_value_heads=num_kv_heads,
      sliding_window=8, query_pre_attn_scalar=24,
      rope_parameters={
          'full_attention': {'rope_type': 'linear', 'rope_theta': 1e6, 'factor': 2.0},
          'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4}})


def _gemma2():
  return transformers.Gemma2Config(
      **_COMMON, num_hidden_layers=4, num_key_value_heads=2, sliding_window=8,
      query_pre_attn_scalar=16, attn_logit_softcapping=5.0,
      final_logit_softcapping=3.0)


def _gemma1():
  return transformers.GemmaConfig(
      **_COMMON, num_hidden_layers=3, num_key_value_heads=4,
      hidden_activation='gelu_pytorch_tanh')


def _save_random(config, path, seed=0):
  """A transformers model with every weight random (norms too), saved."""
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(
      config, attn_implementation='eager').eval()
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.3)
  model.save_pretrained(path)
  return model


@pytest.mark.parametrize('make_config', [_gemma3, lambda: _gemma3(1), _gemma2, _gemma1],
                         ids=['gemma3', 'gemma3_mqa', 'gemma2', 'gemma1'])
def test_logits_match_transformers_past_the_sliding_window(make_config, tmp_path):
  reference = _save_random(make_config(), tmp_path)
  config, params = hf.load(tmp_path)
  length = 40  # 5x the sliding window.
  tokens = np.random.default_rng(0).integers(0, 211, (2, length))
  with torch.no_grad():
    expected = reference(torch.tensor(tokens)).logits.numpy()
  model = gemma.Transformer(config)
  got, _ = jax.jit(model.apply)(
      {'params': params}, jnp.asarray(tokens), jnp.broadcast_to(jnp.arange(length), (2, length)),
      cache.causal_mask(jnp.ones((2, length), jnp.int32)))
  assert np.abs(np.asarray(got) - expected).max() <= 1e-4
  assert np.abs(expected).max() > 1.0  # Not trivially small logits.


def test_config_from_hf_recognises_the_presets():
  hf_270m = {
      'model_type': 'gemma3_text', 'vocab_size': 262144, 'hidden_size': 640,
      'intermediate_size': 2048, 'num_hidden_layers': 18,
      'num_attention_heads': 4, 'num_key_value_heads': 1, 'head_dim': 256,
      'query_pre_attn_scalar': 256, 'sliding_window': 512,
      'rope_parameters': {'full_attention': {'rope_theta': 1e6, 'rope_type': 'default'},
                          'sliding_attention': {'rope_theta': 1e4, 'rope_type': 'default'}},
  }
  assert hf.config_from_hf(hf_270m) == presets.get('gemma3_270m')
  with pytest.raises(CheckpointError, match="unsupported model_type 'llama'"):
    hf.config_from_hf({'model_type': 'llama'})


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
  _save_random(_gemma3(), tmp_path)
  tensors = safetensors.numpy.load_file(tmp_path / 'model.safetensors')
  wrong = hf.config_from_hf(_gemma3().to_dict())
  wrong = presets.GemmaConfig(**{**wrong.__dict__, 'head_dim': 32, 'name': 'mine'})
  with pytest.raises(CheckpointError) as error:
    hf.to_params(tensors, wrong, str(tmp_path))
  message = str(error.value)
  assert 'layers.0.self_attn.q_proj.weight' in message
  assert '(64, 64)' in message and '(128, 64)' in message and "'mine'" in message


def test_missing_and_extra_tensors_are_named(tmp_path):
  _save_random(_gemma3(), tmp_path)
  file = tmp_path / 'model.safetensors'
  tensors = safetensors.numpy.load_file(file)
  del tensors['model.layers.3.mlp.up_proj.weight']
  safetensors.numpy.save_file(tensors, file)
  with pytest.raises(CheckpointError, match=r'layers\.3\.mlp\.up_proj\.weight is missing'):
    hf.load(tmp_path)
  tensors['model.layers.3.mlp.up_proj.weight'] = np.zeros((96, 64), np.float32)
  tensors['model.layers.9.extra.weight'] = np.zeros((3,), np.float32)
  safetensors.numpy.save_file(tensors, file)
  with pytest.raises(CheckpointError, match=r'unexpected tensors.*layers\.9\.extra'):
    hf.load(tmp_path)


def test_missing_or_corrupt_files_fail_clearly(tmp_path):
  with pytest.raises(CheckpointError, match='no config.json'):
    hf.load(tmp_path / 'absent')
  (tmp_path / 'config.json').write_text(json.dumps(_gemma3().to_dict()))
  with pytest.raises(CheckpointError, match=r'no \*\.safetensors'):
    hf.load(tmp_path)
  (tmp_path / 'model.safetensors').write_bytes(b'\x00' * 100)
  with pytest.raises(CheckpointError, match='model.safetensors: not a readable safetensors'):
    hf.load(tmp_path)
  (tmp_path / 'config.json').write_text('{not json')
  with pytest.raises(CheckpointError, match='invalid JSON'):
    hf.load(tmp_path)
  with pytest.raises(CheckpointError, match='no such GGUF file'):
    gguf.load(tmp_path / 'absent.gguf')
  (tmp_path / 'bad.gguf').write_bytes(b'GGUF' + b'\x00' * 64)
  with pytest.raises(CheckpointError, match='bad.gguf: not a readable GGUF'):
    gguf.load(tmp_path / 'bad.gguf')


def test_gguf_file_reads_what_gguf_py_reads(tmp_path):
  """Every metadata type (scalars, strings, arrays of both), alignment, and
  tensors stored as numbers, as bytes (BF16) and quantized (Q8_0): the same
  fields, types and tensor views as gguf-py's own reader."""
  path = tmp_path / 'all.gguf'
  w = gguf_lib.GGUFWriter(str(path), 'gemma3')
  w.add_uint8('t.u8', 200)
  w.add_int8('t.i8', -100)
  w.add_uint16('t.u16', 60000)
  w.add_int16('t.i16', -30000)
  w.add_uint32('t.u32', 4_000_000_000)
  w.add_int32('t.i32', -2_000_000_000)
  w.add_float32('t.f32', 0.25)
  w.add_uint64('t.u64', 2**63 + 5)
  w.add_int64('t.i64', -2**62)
  w.add_float64('t.f64', 1e-300)
  w.add_bool('t.bool', True)
  w.add_string('t.str', 'héllo ▁ wörld')
  w.add_array('t.strs', ['a', '', '▁▁', 'ü' * 40])
  w.add_array('t.ints', [3, -1, 7])
  w.add_array('t.floats', [0.5, -2.0])
  rng = np.random.default_rng(0)
  w.add_tensor('f32', rng.normal(size=(3, 5)).astype(np.float32))
  w.add_tensor('f16', rng.normal(size=(2, 4)).astype(np.float16))
  w.add_tensor('i32', np.arange(6, dtype=np.int32).reshape(2, 3))
  x = rng.normal(size=(2, 64)).astype(np.float32)
  w.add_tensor('bf16', gguf_lib.quants.quantize(x, gguf_lib.GGMLQuantizationType.BF16),
               raw_dtype=gguf_lib.GGMLQuantizationType.BF16)
  w.add_tensor('q8', gguf_lib.quants.quantize(x, gguf_lib.GGMLQuantizationType.Q8_0),
               raw_dtype=gguf_lib.GGMLQuantizationType.Q8_0)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  theirs, ours = gguf_lib.GGUFReader(str(path)), gguf_file.GGUFFile(path)
  keys = [k for k in theirs.fields if not k.startswith('GGUF.')]  # Their header fields.
  assert list(ours.fields) == keys and 't.strs' in keys
  for key in keys:
    assert ours.fields[key].types == theirs.fields[key].types, key
    assert ours.fields[key].contents() == theirs.fields[key].contents(), key
  assert ours.value('t.u64') == 2**63 + 5 and ours.value('nope', 'none') == 'none'
  assert [t.name for t in ours.tensors] == ['f32', 'f16', 'i32', 'bf16', 'q8']
  for a, b in zip(ours.tensors, theirs.tensors, strict=True):
    assert (a.tensor_type, list(a.shape), a.n_elements) == (
        b.tensor_type, list(b.shape), b.n_elements), a.name
    assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, a.name
    np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)
  np.testing.assert_allclose(
      gguf_lib.quants.dequantize(ours.tensors[4].data, ours.tensors[4].tensor_type), x,
      atol=0.05)
  # Cut anywhere, the file is refused with one line, never read past its end.
  data = path.read_bytes()
  for cut in (3, 30, len(data) // 2, len(data) - 64):  # The end is padding.
    (tmp_path / 'cut.gguf').write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match='cut.gguf: not a readable GGUF file'):
      gguf.read(tmp_path / 'cut.gguf')


# ---------------------------------------------------------------------------
# GGUF files written here the way llama.cpp writes Gemma 3: HF tensors renamed,
# RMSNorm weights stored as (1 + w), the architecture in metadata.

_TO_GGUF = {
    'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
    'self_attn.q_norm': 'attn_q_norm', 'self_attn.k_norm': 'attn_k_norm',
    'input_layernorm': 'attn_norm', 'post_attention_layernorm': 'post_attention_norm',
    'pre_feedforward_layernorm': 'ffn_norm',
    'post_feedforward_layernorm': 'post_ffw_norm', 'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down',
}
# A small SentencePiece-style vocabulary: specials, then pieces.
_TOKENS = (['<pad>', '<eos>', '<bos>', '<unk>'] + list('abcdefghij') +
           ['\u2581' + c for c in 'abcdefghij'] + ['ab', 'cd', '\u2581ab', 'ef'])


def _gguf_name(hf_name: str) -> str:
  name = hf_name.removeprefix('model.')
  if name == 'embed_tokens.weight':
    return 'token_embd.weight'
  if name == 'norm.weight':
    return 'output_norm.weight'
  layer, part = re.fullmatch(r'layers\.(\d+)\.(.+)\.weight', name).groups()
  return f'blk.{layer}.{_TO_GGUF[part]}.weight'


def _write_gguf(path, tensors, *, layers, embed, ffn, heads, kv_heads, head_dim,
                window, rope_factor=1.0, pattern=None):
  """A Gemma 3 GGUF of float32 `tensors` (HF names) with `_TOKENS`."""
  w = gguf_lib.GGUFWriter(str(path), 'gemma3')
  w.add_block_count(layers)
  w.add_embedding_length(embed)
  w.add_feed_forward_length(ffn)
  w.add_head_count(heads)
  w.add_head_count_kv(kv_heads)
  w.add_key_length(head_dim)
  w.add_value_length(head_dim)
  w.add_layer_norm_rms_eps(1e-6)
  w.add_rope_freq_base(1e6)
  w.add_sliding_window(window)
  if pattern is not None:
    w.add_sliding_window_pattern(pattern)
  if rope_factor != 1.0:
    w.add_rope_scaling_type(gguf_lib.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(rope_factor)
  w.add_tokenizer_model('llama')
  w.add_token_list(_TOKENS)
  w.add_token_types([gguf_lib.TokenType.CONTROL] * 3 + [gguf_lib.TokenType.UNKNOWN]
                    + [gguf_lib.TokenType.NORMAL] * (len(_TOKENS) - 4))
  for name, key in [('pad', 0), ('eos', 1), ('bos', 2), ('unk', 3)]:
    getattr(w, f'add_{name}_token_id')(key)
  w.add_add_space_prefix(False)
  for name, x in tensors.items():
    x = np.asarray(x, np.float32)
    w.add_tensor(_gguf_name(name), x + 1.0 if name.endswith('norm.weight') else x)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _gemma3_gguf_config():
  """_gemma3() as a GGUF can state it (query scale head_dim**-0.5)."""
  config = _gemma3()
  config.query_pre_attn_scalar = config.head_dim
  return config


def _save_gguf(tmp_path, config=None):
  """(path of a GGUF of a random model with `config`, the torch model)."""
  config = config or _gemma3_gguf_config()
  reference = _save_random(config, tmp_path / 'hf')
  tensors = {k: v.numpy() for k, v in reference.state_dict().items()
             if k != 'lm_head.weight'}
  path = tmp_path / 'model.gguf'
  _write_gguf(path, tensors, layers=config.num_hidden_layers, embed=config.hidden_size,
              ffn=config.intermediate_size, heads=config.num_attention_heads,
              kv_heads=config.num_key_value_heads, head_dim=config.head_dim,
              window=config.sliding_window,
              rope_factor=config.rope_parameters['full_attention']['factor'])
  return path, reference


def test_gguf_logits_match_transformers_and_the_config_matches_config_json(tmp_path):
  path, reference = _save_gguf(tmp_path)
  config, params, tok = gguf.load(path)
  # The architecture GGUF metadata states is the one config.json states.
  assert presets.mismatches(config, hf.config_from_hf(reference.config.to_dict())) == {}
  assert config.attention_types[-1] == presets.AttentionType.GLOBAL
  length = 40  # 5x the sliding window.
  tokens = np.random.default_rng(0).integers(0, 211, (2, length))
  with torch.no_grad():
    expected = reference(torch.tensor(tokens)).logits.numpy()
  got, _ = jax.jit(gemma.Transformer(config).apply)(
      {'params': params}, jnp.asarray(tokens),
      jnp.broadcast_to(jnp.arange(length), (2, length)),
      cache.causal_mask(jnp.ones((2, length), jnp.int32)))
  assert np.abs(np.asarray(got) - expected).max() <= 1e-4
  assert np.abs(expected).max() > 1.0
  # The tokenizer in the same file: its pieces and special ids.
  assert tok.vocab_size == len(_TOKENS)
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
  assert tok.encode('ab cd', add_bos=True) == [2, _TOKENS.index('ab'),
                                               _TOKENS.index('\u2581c'), _TOKENS.index('d')]


def _tiny_gguf(tmp_path):
  """A GGUF with the architecture of preset 'tiny' (random weights)."""
  c = presets.get('tiny')
  rng = np.random.default_rng(0)
  d, f, h = c.embed_dim, c.hidden_dim, c.head_dim
  shapes = {'embed_tokens.weight': (c.vocab_size, d), 'norm.weight': (d,)}
  for i in range(c.num_layers):
    shapes.update({
        f'layers.{i}.self_attn.q_proj.weight': (c.num_heads * h, d),
        f'layers.{i}.self_attn.k_proj.weight': (c.num_kv_heads * h, d),
        f'layers.{i}.self_attn.v_proj.weight': (c.num_kv_heads * h, d),
        f'layers.{i}.self_attn.o_proj.weight': (d, c.num_heads * h),
        f'layers.{i}.self_attn.q_norm.weight': (h,),
        f'layers.{i}.self_attn.k_norm.weight': (h,),
        f'layers.{i}.mlp.gate_proj.weight': (f, d),
        f'layers.{i}.mlp.up_proj.weight': (f, d),
        f'layers.{i}.mlp.down_proj.weight': (d, f),
        **{f'layers.{i}.{n}.weight': (d,) for n in (
            'input_layernorm', 'post_attention_layernorm',
            'pre_feedforward_layernorm', 'post_feedforward_layernorm')}})
  tensors = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  path = tmp_path / 'tiny.gguf'
  # Two layers: the sliding-window pattern (local, global) is stated per layer.
  _write_gguf(path, tensors, layers=c.num_layers, embed=d, ffn=f, heads=c.num_heads,
              kv_heads=c.num_kv_heads, head_dim=h, window=c.sliding_window,
              pattern=[t == presets.AttentionType.LOCAL for t in c.attention_types])
  return path, tensors


def test_gguf_checkpoint_is_read_once_for_weights_and_tokenizer(tmp_path, monkeypatch):
  path, tensors = _tiny_gguf(tmp_path)
  opened = []
  reader = gguf_file.GGUFFile
  monkeypatch.setattr(gguf_file, 'GGUFFile', lambda p: opened.append(p) or reader(p))
  model, params, tok = load.load(config_lib.model('tiny', f'gguf:{path}'))
  assert opened == [path]
  assert model.config == presets.get('tiny') and tok.vocab_size == len(_TOKENS)
  np.testing.assert_array_equal(params['embedder']['input_embedding'],
                                tensors['embed_tokens.weight'])
  np.testing.assert_allclose(params['final_norm']['scale'], tensors['norm.weight'],
                             atol=1e-6)


_TINY_VS_GEMMA3 = [  # What _gemma3() states vs what preset 'tiny' has.
    'vocab_size: 211 in the checkpoint, 262144 in the preset',
    'hidden_dim: 96 in the checkpoint, 128 in the preset',
    'num_heads: 4 in the checkpoint, 2 in the preset',
    'num_kv_heads: 2 in the checkpoint, 1 in the preset',
    'head_dim: 16 in the checkpoint, 32 in the preset',
    "attention_types: ('local', 'local', 'local', 'local', 'local', 'global') in "
    "the checkpoint, ('local', 'global') in the preset",
    'sliding_window: 8 in the checkpoint, 16 in the preset',
    'global_rope_scale: 2.0 in the checkpoint, 1.0 in the preset',
]


def _assert_names_exactly(error, lines):
  message = str(error.value)
  for line in lines:
    assert line in message
  # embed_dim (64), the RoPE bases and norm_eps agree: not named.
  assert len(message.strip().splitlines()) == 1 + len(lines), message


def test_gguf_of_another_architecture_names_every_differing_field(tmp_path):
  path, _ = _save_gguf(tmp_path)
  lines = _TINY_VS_GEMMA3 + [
      f'query_scale: {16**-0.5!r} in the checkpoint, {32**-0.5!r} in the preset']
  with pytest.raises(CheckpointError, match=f"{path} is not a 'tiny' model") as error:
    gguf.load(path, presets.get('tiny'))
  _assert_names_exactly(error, lines)
  with pytest.raises(CheckpointError) as error:
    load.load(config_lib.model('tiny', f'gguf:{path}'))
  _assert_names_exactly(error, lines)


def test_hf_of_another_architecture_names_every_differing_field(tmp_path):
  _save_random(_gemma3(), tmp_path)  # Query scale 24**-0.5.
  lines = _TINY_VS_GEMMA3 + [
      f'query_scale: {24**-0.5!r} in the checkpoint, {32**-0.5!r} in the preset']
  with pytest.raises(CheckpointError, match=f"{tmp_path} is not a 'tiny' model") as error:
    hf.load(tmp_path, presets.get('tiny'))
  _assert_names_exactly(error, lines)
  with pytest.raises(CheckpointError) as error:
    load.load(config_lib.model('tiny', f'hf:{tmp_path}'))
  _assert_names_exactly(error, lines)


# ---------------------------------------------------------------------------
# Damaged caches: named in a warning and rebuilt (tiny GGUF files stand in
# for the embedded model).

def _damage(path, how: str):
  data = path.read_bytes()
  if how == 'truncated':
    path.write_bytes(data[:len(data) // 2])
  elif how == 'one byte changed':
    k = len(data) - 3  # In the data, past any header.
    path.write_bytes(data[:k] + bytes([data[k] ^ 1]) + data[k + 1:])
  else:  # 'no checksum file'
    path.with_name(path.name + '.crc32').unlink()


_DAMAGE = ['truncated', 'one byte changed', 'no checksum file']


@pytest.mark.parametrize('how', _DAMAGE)
def test_damaged_weights_cache_is_named_and_rebuilt(tmp_path, how, caplog):
  path, _ = _save_gguf(tmp_path)
  config = gguf.config_from_gguf(gguf.read(path), str(path))
  cache_file = tmp_path / 'cache' / 'params.safetensors'
  fresh = params_lib.flatten(gguf._load_cached(lambda: path, config, cache_file))
  assert (tmp_path / 'cache' / 'params.safetensors.crc32').is_file()
  with caplog.at_level(logging.WARNING):  # An intact cache loads silently.
    cached = params_lib.flatten(gguf._load_cached(
        lambda: pytest.fail('converted although the cache is intact'), config, cache_file))
  assert not caplog.records
  _damage(cache_file, how)
  with caplog.at_level(logging.WARNING):
    rebuilt = params_lib.flatten(gguf._load_cached(lambda: path, config, cache_file))
  assert [r.levelno for r in caplog.records] == [logging.WARNING]
  assert str(cache_file) in caplog.text and 'Corrupt cache' in caplog.text
  for key in fresh:
    np.testing.assert_array_equal(cached[key], fresh[key], err_msg=key)
    np.testing.assert_array_equal(rebuilt[key], fresh[key], err_msg=key)
  # The rebuilt cache is intact again: it loads without a warning.
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    gguf._load_cached(lambda: pytest.fail('converted again'), config, cache_file)
  assert not caplog.records


@pytest.fixture
def tiny_default_tokenizer(tmp_path, monkeypatch):
  """`tokenizer.load_default` building from a tiny GGUF into a private cache."""
  path, _ = _save_gguf(tmp_path)
  monkeypatch.setenv('ICL_IWL_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setattr(paths, 'embedded_gguf', lambda: path)
  tokenizer.load_default.cache_clear()
  yield
  tokenizer.load_default.cache_clear()  # Later tests get the real one.


@pytest.mark.parametrize('how', _DAMAGE)
def test_damaged_tokenizer_cache_is_named_and_rebuilt(tiny_default_tokenizer, how,
                                                      caplog):
  del tiny_default_tokenizer
  texts = ['ab cd ef', 'a b c <eos>', 'jihgfedcba']
  expected = tokenizer.load_default().encode_batch(texts, add_bos=True)
  cache_file = tokenizer.default_model_path()
  assert str(cache_file).startswith(str(paths.cache_dir()))
  built = cache_file.read_bytes()
  _damage(cache_file, how)
  tokenizer.load_default.cache_clear()
  with caplog.at_level(logging.WARNING):
    tok = tokenizer.load_default()
  assert [r.levelno for r in caplog.records] == [logging.WARNING]
  assert str(cache_file) in caplog.text and 'Corrupt cache' in caplog.text
  assert tok.encode_batch(texts, add_bos=True) == expected
  assert tok.vocab_size == len(_TOKENS)
  assert cache_file.read_bytes() == built
