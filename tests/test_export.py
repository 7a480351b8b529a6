"""Export to transformers directories and GGUF files: round trips on tiny
Gemma 1/2/3 models (random weights, norms too) checked against transformers'
own loaders and ours, a LoRA run exported with its merged logits, and the
refusals of the command.

A tokenizer of 28 pieces in a tiny GGUF stands in for Gemma's 262k (whose
conversion by transformers takes minutes); the real tokenizer and the real
270M are in `test_real_270m_exports_to_transformers` (real_model).
"""

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import gguf as gguf_lib
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from icl_iwl import errors
from icl_iwl import export
from icl_iwl import paths
from icl_iwl.checkpoints import gguf
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints import params as params_lib
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.model import build
from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import presets

_G, _L = presets.AttentionType.GLOBAL, presets.AttentionType.LOCAL
_SMALL = dict(vocab_size=211, embed_dim=64, hidden_dim=96)


def _configs() -> dict[str, presets.GemmaConfig]:
  """Tiny Gemma 1/2/3 models. Only Gemma 3 has a registered tiny preset;
  the others shrink the smallest preset of their family."""
  g1, g2 = presets.get('gemma1_2b'), presets.get('gemma2_2b')
  return {
      'gemma1': dataclasses.replace(
          g1, name='tiny_gemma1', **_SMALL, num_heads=4, num_kv_heads=1, head_dim=16,
          query_scale=16**-0.5, attention_types=(_G,) * 3),
      'gemma1_mha': dataclasses.replace(  # K == N: one qkv_einsum.
          g1, name='tiny_gemma1_mha', **_SMALL, num_heads=2, num_kv_heads=2,
          head_dim=16, query_scale=16**-0.5, attention_types=(_G,) * 2),
      'gemma2': dataclasses.replace(
          g2, name='tiny_gemma2', **_SMALL, num_heads=4, num_kv_heads=2, head_dim=16,
          query_scale=24**-0.5, attention_types=(_L, _G) * 2, sliding_window=8,
          attn_logit_softcap=5.0, final_logit_softcap=3.0, transpose_gating_einsum=True),
      'gemma3': presets.get('tiny'),
      'gemma3_scaled': dataclasses.replace(  # Linear RoPE scaling on global layers.
          presets.get('tiny'), name='tiny_gemma3_scaled', **_SMALL,
          attention_types=(_L,) * 5 + (_G,), sliding_window=8, global_rope_scale=2.0,
          local_rope_base=20_000.0),
  }


# A SentencePiece-style vocabulary: specials, then pieces.
_PIECES = (['<pad>', '<eos>', '<bos>', '<unk>'] + list('abcdefghij') +
           ['\u2581' + c for c in 'abcdefghij'] + ['ab', 'cd', '\u2581ab', 'ef', '\u2581'])


# What transformers' GGUF loader can read back: it takes head_dim, the window
# and one RoPE base from the file but assumes the rest (query_pre_attn_scalar
# 256, the family's layer pattern, Gemma 2's softcaps 50 and 30, local RoPE
# base 10k). It has no Gemma 1 GGUF support at all.
_HD256 = dict(vocab_size=len(_PIECES), embed_dim=64, hidden_dim=96, num_heads=2,
              num_kv_heads=1, head_dim=256, query_scale=1 / 16)
_TRANSFORMERS_GGUF = {
    'gemma2': dataclasses.replace(
        presets.get('gemma2_2b'), name='gguf_gemma2', **_HD256,
        attention_types=(_L, _G) * 2, sliding_window=8),
    'gemma3': dataclasses.replace(
        presets.get('gemma3_270m'), name='gguf_gemma3', **_HD256,
        attention_types=(_L,) * 5 + (_G,), sliding_window=8),
}


def _random_params(config: presets.GemmaConfig, seed: int = 0) -> params_lib.Params:
  """Every param random, norm scales too (a zero init would hide a swap)."""
  rng = np.random.default_rng(seed)
  return params_lib.unflatten({
      k: (0.3 * rng.standard_normal(s)).astype(np.float32)
      for k, s in params_lib.shapes(config).items()})


_LENGTH = 40  # Past every sliding window here.


def _tokens(vocab_size: int) -> np.ndarray:
  return np.random.default_rng(1).integers(0, min(vocab_size, 211), (2, _LENGTH))


def _our_logits(model: gemma.Transformer, params, tokens: np.ndarray) -> np.ndarray:
  b, t = tokens.shape
  logits, _ = jax.jit(model.apply)(
      {'params': params}, jnp.asarray(tokens), jnp.broadcast_to(jnp.arange(t), (b, t)),
      cache.causal_mask(jnp.ones((b, t), jnp.int32)))
  return np.asarray(logits)


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.float().numpy()


@pytest.fixture(scope='module')
def tok_gguf(tmp_path_factory) -> pathlib.Path:
  """A GGUF holding only a tokenizer (`_PIECES`), as a Gemma 3 file states it."""
  path = tmp_path_factory.mktemp('tok') / 'tok.gguf'
  w = gguf_lib.GGUFWriter(str(path), 'gemma3')
  w.add_tokenizer_model('llama')
  w.add_token_list(_PIECES)
  w.add_token_scores([-float(i) for i in range(len(_PIECES))])
  w.add_token_types([gguf_lib.TokenType.CONTROL] * 4  # <unk> too, as in the 270M's file.
                    + [gguf_lib.TokenType.NORMAL] * (len(_PIECES) - 4))
  for name, i in [('pad', 0), ('eos', 1), ('bos', 2), ('unk', 3)]:
    getattr(w, f'add_{name}_token_id')(i)
  w.add_add_space_prefix(False)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


@pytest.fixture(scope='module')
def tok_files(tok_gguf, tmp_path_factory) -> pathlib.Path:
  """The Hugging Face tokenizer files of `tok_gguf`, built once."""
  directory = tmp_path_factory.mktemp('tok_files')
  export.write_tokenizer_files(f'gguf:{tok_gguf}', directory)
  return directory


def _write_hf(directory: pathlib.Path, config, params, tok_files, dtype='float32'):
  directory.mkdir()
  export.write_tokenizer_files(f'hf:{tok_files}', directory)
  export.write_hf(directory, config, params, dtype)


@pytest.mark.parametrize('name', list(_configs()))
def test_hf_mapping_is_exactly_the_inverse_of_the_loaders(name):
  config = _configs()[name]
  flat = params_lib.flatten(_random_params(config))
  tensors = hf.from_params(flat, config)
  back = hf.to_params(tensors, config, 'test')
  assert back.keys() == flat.keys()
  for key in flat:
    np.testing.assert_array_equal(back[key], flat[key], err_msg=key)
  again = hf.from_params(back, config)  # And the other way round.
  assert again.keys() == tensors.keys()
  for key in tensors:
    np.testing.assert_array_equal(again[key], tensors[key], err_msg=key)


@pytest.mark.parametrize('name', list(_configs()))
def test_hf_export_loads_in_transformers_with_our_logits(name, tok_files, tmp_path):
  config = _configs()[name]
  params = _random_params(config)
  _write_hf(tmp_path / 'out', config, params, tok_files)
  # Our loader reads back the same architecture and exactly the same params.
  found, _ = hf.load(tmp_path / 'out')
  assert presets.mismatches(found, config) == {}
  _, loaded = hf.load(tmp_path / 'out', config)  # In `config`'s gating layout.
  flat = params_lib.flatten(params)
  for key, value in params_lib.flatten(loaded).items():
    np.testing.assert_array_equal(value, flat[key], err_msg=key)
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / 'out', dtype=torch.float32, attn_implementation='eager').eval()
  tokens = _tokens(config.vocab_size)
  expected = _torch_logits(reference, tokens)
  assert np.abs(_our_logits(gemma.Transformer(config), params, tokens) - expected).max() <= 1e-4
  assert np.abs(expected).max() > 1.0  # Not trivially small logits.


def test_hf_export_of_a_gguf_tokenizer_gives_our_token_ids(tok_gguf, tok_files, tmp_path):
  _write_hf(tmp_path / 'out', *(lambda c: (c, _random_params(c)))(_configs()['gemma1']),
            tok_files)
  ours = gguf.tokenizer(gguf.read(tok_gguf))
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / 'out')
  read_back = tokenizer_lib.from_hf_dir(tmp_path / 'out')
  texts = ['ab cd ef', 'a b  c<eos>', 'jihgfedcba', ' ab', 'abcdefghij ab cd']
  for text in texts:
    expected = ours.encode(text, add_bos=True)
    assert theirs(text).input_ids == expected, text
    assert read_back.encode(text, add_bos=True) == expected, text
  config = json.loads((tmp_path / 'out' / 'config.json').read_text())
  assert (config['pad_token_id'], config['eos_token_id'], config['bos_token_id']) == (0, 1, 2)


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_hf_export_in_half_precision_holds_the_cast_weights(dtype, tok_files, tmp_path):
  config = _configs()['gemma3_scaled']
  params = _random_params(config)
  _write_hf(tmp_path / 'out', config, params, tok_files, dtype)
  _, loaded = hf.load(tmp_path / 'out')
  want = export._NUMPY_DTYPES[dtype]
  flat = params_lib.flatten(params)
  for key, value in params_lib.flatten(loaded).items():
    assert value.dtype == want, key
    np.testing.assert_array_equal(value, flat[key].astype(want), err_msg=key)
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'out')
  assert model.dtype == getattr(torch, dtype)


@pytest.mark.parametrize('name', list(_configs()))
@pytest.mark.parametrize('dtype', export.DTYPES)
def test_gguf_export_reads_back_in_our_loader(name, dtype, tok_gguf, tmp_path):
  config = _configs()[name]
  params = _random_params(config)
  path = tmp_path / 'out.gguf'
  fields = gguf.tokenizer_fields(gguf.read(tok_gguf))
  if config.query_scale != config.head_dim**-0.5:  # GGUF has no field for it.
    with pytest.raises(CheckpointError, match=r'GGUF cannot state the query scale'):
      gguf.write(path, config, params, fields, dtype)
    assert not path.exists()
    config = dataclasses.replace(config, query_scale=config.head_dim**-0.5)
  gguf.write(path, config, params, fields, dtype)
  found, loaded, tok = gguf.load(path)
  assert presets.mismatches(found, config) == {}
  _, loaded, _ = gguf.load(path, config)  # In `config`'s gating layout.
  assert tok.encode('ab cd', add_bos=True) == gguf.tokenizer(
      gguf.read(tok_gguf)).encode('ab cd', add_bos=True)
  want = export._NUMPY_DTYPES[dtype]
  for key, value in params_lib.flatten(loaded).items():
    original = params_lib.flatten(params)[key]
    if key.endswith('scale'):  # Stored as (1 + w) in float32.
      np.testing.assert_allclose(value, original, atol=2**-23, rtol=0, err_msg=key)
    else:
      np.testing.assert_array_equal(value, original.astype(want).astype(np.float32),
                                    err_msg=key)
  types = {t.name: t.tensor_type for t in gguf.read(path).tensors}
  assert types['token_embd.weight'].name == {'float32': 'F32', 'float16': 'F16',
                                             'bfloat16': 'BF16'}[dtype]
  assert types['output_norm.weight'].name == 'F32'


def test_what_transformers_gguf_loader_would_misread_is_named():
  assert gguf.transformers_misreads(_TRANSFORMERS_GGUF['gemma2']) == []
  assert gguf.transformers_misreads(_TRANSFORMERS_GGUF['gemma3']) == []
  assert gguf.transformers_misreads(presets.get('gemma3_270m')) == []
  assert gguf.transformers_misreads(presets.get('gemma2_2b')) == []
  misread = gguf.transformers_misreads(presets.get('tiny'))
  assert [m.split()[0] for m in misread] == ['query_scale', 'attention_types']
  assert gguf.transformers_misreads(_configs()['gemma1']) == [
      'transformers reads no Gemma 1 GGUF']


@pytest.mark.parametrize('name', list(_TRANSFORMERS_GGUF))
def test_gguf_export_loads_in_transformers_with_our_logits(name, tok_gguf, tmp_path):
  config = _TRANSFORMERS_GGUF[name]
  params = _random_params(config)
  path = tmp_path / 'out.gguf'
  gguf.write(path, config, params, gguf.tokenizer_fields(gguf.read(tok_gguf)))
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, gguf_file=path.name, dtype=torch.float32,
      attn_implementation='eager').eval()
  tokens = _tokens(config.vocab_size)
  expected = _torch_logits(reference, tokens)
  assert np.abs(_our_logits(gemma.Transformer(config), params, tokens) - expected).max() <= 1e-4
  assert np.abs(expected).max() > 1.0


# ---------------------------------------------------------------------------
# The command: a fine-tuned run, atomic writes, refusals.

def test_lora_run_exports_with_the_logits_of_the_lora_model(
    tok_gguf, tmp_path, monkeypatch):
  from test_load_run import _write_run  # pylint: disable=g-import-not-at-top

  # The run starts from 'random' weights: its tokenizer is the embedded one's.
  monkeypatch.setattr(paths, 'embedded_gguf', lambda: tok_gguf)
  # A Gemma 3 that transformers' GGUF loader reads as it is (unlike 'tiny').
  config = _TRANSFORMERS_GGUF['gemma3']
  monkeypatch.setitem(presets.PRESETS._items, config.name, lambda: config)  # pylint: disable=protected-access
  run = tmp_path / 'run'
  run_config, saved = _write_run(run, 'lora', preset=config.name)
  lora_model = build.model(run_config.model)
  assert lora_model.lora is not None
  tokens = _tokens(config.vocab_size)
  expected = _our_logits(lora_model, saved[2], tokens)

  export.export(f'run:{run}@2', f'hf:{tmp_path / "hf"}')
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / 'hf', dtype=torch.float32, attn_implementation='eager').eval()
  assert np.abs(_torch_logits(reference, tokens) - expected).max() <= 1e-4
  assert transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')('ab cd').input_ids == (
      gguf.tokenizer(gguf.read(tok_gguf)).encode('ab cd', add_bos=True))

  export.export(f'run:{run}@2', f'gguf:{tmp_path / "run.gguf"}')
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, gguf_file='run.gguf', dtype=torch.float32,
      attn_implementation='eager').eval()
  assert np.abs(_torch_logits(reference, tokens) - expected).max() <= 1e-4
  found, params, _ = gguf.load(tmp_path / 'run.gguf', config)
  got = _our_logits(gemma.Transformer(found), params, tokens)
  assert np.abs(got - expected).max() <= 1e-4
  # The adapters matter: the base weights alone give other logits.
  base = {k: v for k, v in params_lib.flatten(saved[2]).items() if '_lora_' not in k}
  without = _our_logits(gemma.Transformer(found), params_lib.unflatten(base), tokens)
  assert np.abs(without - expected).max() > 1e-2


def _fields(path: pathlib.Path) -> dict[str, object]:
  return {k: v for k, v, _ in gguf.tokenizer_fields(gguf.read(path))}


def test_gguf_export_of_an_hf_source_loads_in_transformers_as_the_source(
    tok_gguf, tok_files, tmp_path):
  # The source's tokenizer.json is what transformers built from tok_gguf: the
  # GGUF tokenizer rebuilt from it states tok_gguf's pieces, types and ids.
  config = _TRANSFORMERS_GGUF['gemma3']
  source = tmp_path / 'source'
  _write_hf(source, config, _random_params(config), tok_files)
  out = export.export(f'hf:{source}', f'gguf:{tmp_path / "out.gguf"}')
  got, want = _fields(out), _fields(tok_gguf)
  for key in ('tokenizer.ggml.model', 'tokenizer.ggml.bos_token_id',
              'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.unknown_token_id',
              'tokenizer.ggml.padding_token_id', 'tokenizer.ggml.add_space_prefix'):
    assert got[key] == want[key], key
  assert got['tokenizer.ggml.add_bos_token'] is True  # transformers' default for it.
  # transformers' GemmaTokenizer added a special '<mask>' after tok_gguf's pieces.
  n = len(_PIECES)
  assert got['tokenizer.ggml.tokens'] == _PIECES + ['<mask>']
  assert np.array_equal(got['tokenizer.ggml.token_type'][:n], want['tokenizer.ggml.token_type'])
  assert got['tokenizer.ggml.token_type'][n] == gguf_lib.TokenType.CONTROL
  # The NORMAL pieces keep their order and spacing of scores (tok_gguf's start at -4).
  normal = np.asarray(want['tokenizer.ggml.token_type']) == gguf_lib.TokenType.NORMAL
  np.testing.assert_array_equal(np.asarray(got['tokenizer.ggml.scores'])[:n][normal],
                                np.asarray(want['tokenizer.ggml.scores'])[normal] + 4)

  # transformers reads the GGUF with the logits and token ids of the source.
  tokens = _tokens(config.vocab_size)
  expected = _torch_logits(transformers.AutoModelForCausalLM.from_pretrained(
      source, dtype=torch.float32, attn_implementation='eager').eval(), tokens)
  got_logits = _torch_logits(transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, gguf_file=out.name, dtype=torch.float32,
      attn_implementation='eager').eval(), tokens)
  assert np.abs(got_logits - expected).max() <= 1e-4  # Norms stored as 1 + w.
  assert np.abs(expected).max() > 1.0
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=out.name)
  ours = gguf.load(out)[2]
  for text in ['ab cd', 'abcdefghij ef', ' a', 'j\u2581a', 'zz', '']:
    want_ids = tokenizer_lib.from_hf_dir(source).encode(text, add_bos=True)
    assert ours.encode(text, add_bos=True) == want_ids, text
    assert theirs(text).input_ids == want_ids, text


@pytest.fixture
def hf_source(tok_files, tmp_path) -> pathlib.Path:
  """A transformers directory of tiny Gemma 1 weights (no GGUF tokenizer)."""
  config = _configs()['gemma1']
  _write_hf(tmp_path / 'source', config, _random_params(config), tok_files)
  return tmp_path / 'source'


def _leftovers(directory: pathlib.Path) -> list[str]:
  return sorted(p.name for p in directory.iterdir() if p.name.startswith('.'))


def test_existing_destination_is_replaced_only_by_a_complete_export(
    hf_source, tok_gguf, tmp_path, monkeypatch):
  dest = tmp_path / 'dest'
  dest.mkdir()
  (dest / 'old.txt').write_text('old')
  with pytest.raises(errors.UserError, match='exists; pass --overwrite'):
    export.export(f'hf:{hf_source}', f'hf:{dest}')

  def crash(directory, *args, **kwargs):
    del args, kwargs
    (directory / 'model.safetensors').write_bytes(b'partial')
    raise RuntimeError('killed')

  with monkeypatch.context() as m:
    m.setattr(export, 'write_hf', crash)
    with pytest.raises(RuntimeError, match='killed'):
      export.export(f'hf:{hf_source}', f'hf:{dest}', overwrite=True)
  assert [p.name for p in dest.iterdir()] == ['old.txt'] and not _leftovers(tmp_path)
  export.export(f'hf:{hf_source}', f'hf:{dest}', overwrite=True)
  assert not (dest / 'old.txt').exists() and not _leftovers(tmp_path)
  assert (dest / 'model.safetensors').read_bytes() == (
      hf_source / 'model.safetensors').read_bytes()

  out = tmp_path / 'out.gguf'
  out.write_bytes(b'old')

  def crash_gguf(path, *args, **kwargs):
    del args, kwargs
    pathlib.Path(path).write_bytes(b'partial')
    raise RuntimeError('killed')

  monkeypatch.setattr(paths, 'embedded_gguf', lambda: pytest.fail('not asked for'))
  source = tmp_path / 'source.gguf'
  config = _configs()['gemma3_scaled']
  gguf.write(source, config, _random_params(config),
             gguf.tokenizer_fields(gguf.read(tok_gguf)))
  with monkeypatch.context() as m:
    m.setattr(gguf, 'write', crash_gguf)
    with pytest.raises(RuntimeError, match='killed'):
      export.export(f'gguf:{source}', f'gguf:{out}', overwrite=True)
  assert out.read_bytes() == b'old' and not _leftovers(tmp_path)
  export.export(f'gguf:{source}', f'gguf:{out}', overwrite=True)
  assert not _leftovers(tmp_path)
  expected = params_lib.flatten(gguf.load(source)[1])
  for key, value in params_lib.flatten(gguf.load(out)[1]).items():
    np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_bad_flags_are_refused_in_one_line_before_any_weights_load(
    hf_source, tmp_path, monkeypatch):
  monkeypatch.setattr(export, 'read', lambda source: pytest.fail('read ' + source))
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  new = tmp_path / 'new'
  no_json = tmp_path / 'no_json'  # A tokenizer.model only.
  shutil.copytree(hf_source, no_json)
  (no_json / 'tokenizer.json').unlink()
  (no_json / 'tokenizer.model').write_bytes(b'')
  unigram = tmp_path / 'unigram'  # A tokenizer.json GGUF's 'llama' model cannot state.
  shutil.copytree(hf_source, unigram)
  spec = json.loads((unigram / 'tokenizer.json').read_text())
  spec['model']['type'] = 'Unigram'
  (unigram / 'tokenizer.json').write_text(json.dumps(spec))
  cases = [
      (('foo:x', f'hf:{new}'), r"Unknown --from 'foo:x'\..* Valid: .*run:WORKDIR"),
      (('random', f'hf:{new}'), 'random weights are not worth exporting'),
      ((f'gguf:{tmp_path}/absent.gguf', f'hf:{new}'), 'no GGUF file'),
      ((f'run:{tmp_path}/absent@best', f'hf:{new}'), 'not a training run directory'),
      ((f'hf:{hf_source}', f's3:{new}'), r"Unknown --to 's3:.*Valid: gguf:PATH, hf:DIR"),
      ((f'hf:{hf_source}', 'hf:'), r"Unknown --to 'hf:'"),
      ((f'hf:{hf_source}', f'hf:{new}', 'float64'), r"Unknown --dtype 'float64'"),
      ((f'hf:{hf_source}', f'hf:{hf_source}'), 'exists; pass --overwrite'),
      ((f'hf:{hf_source}', f'hf:{a_file}', 'float32', True), 'is a file, not a directory'),
      ((f'hf:{hf_source}', f'hf:{a_file}/sub/out'), f'{a_file} is not a directory'),
      ((f'hf:{hf_source}', 'hf:/proc/icl_iwl_export'), 'cannot write in /proc'),
      ((f'hf:{no_json}', f'gguf:{new}.gguf'),
       f'the GGUF tokenizer is rebuilt from a tokenizer.json, and hf:{no_json}'),
      ((f'hf:{unigram}', f'gguf:{new}.gguf'),
       "rebuilds a SentencePiece BPE tokenizer with byte fallback.*this one is 'Unigram'"),
  ]
  for args, message in cases:
    with pytest.raises(errors.UserError, match=message) as error:
      export.export(*args)
    assert '\n' not in str(error.value), args
  assert not new.exists()


def test_command_prints_one_line_for_a_mistake_and_teaches_with_help(hf_source):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  command = [sys.executable, '-m', 'icl_iwl.export']
  done = subprocess.run(command + [f'--from=hf:{hf_source}', f'--to=hf:{hf_source}'],
                        capture_output=True, text=True, env=env, check=False)
  assert done.returncode == errors.EXIT_USER_ERROR
  assert done.stderr.strip().splitlines() == [
      f'FATAL: --to=hf:{hf_source}: {hf_source} exists; pass --overwrite to replace it.']
  helped = subprocess.run(command + ['--helpshort'], capture_output=True, text=True,
                          env=env, check=False)
  for flag in ('--from', '--to', '--dtype', '--[no]overwrite'):
    assert flag in helped.stdout, flag
  assert 'run:WORKDIR[@best|@last|@STEP]' in helped.stdout


# ---------------------------------------------------------------------------
# The real Gemma 3 270M (~3 GB; run it under the heavy lock on a shared machine).

@pytest.mark.real_model
def test_real_270m_exports_to_transformers(tmp_path, real_rt):
  from test_gemma3_270m import _TEXT  # pylint: disable=g-import-not-at-top

  ours = real_rt.tok
  texts = [_TEXT, '\n\n'.join(reversed(_TEXT.split('\n\n')))]
  # 600 tokens: past the sliding window (512).
  tokens = np.asarray([ids[:600] for ids in ours.encode_batch(texts, add_bos=True)])
  expected = _our_logits(real_rt.model, real_rt.params, tokens)

  export.export('embedded', f'hf:{tmp_path / "hf"}')
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / 'hf', dtype=torch.float32).eval()
  got = _torch_logits(reference, tokens)
  del reference
  assert (got.argmax(-1) == expected.argmax(-1)).all()
  # 1.3 GB each. f32 rounding of torch vs XLA over 18 layers and 600 tokens
  # came to 3.0e-4 at most here (test_gemma3_270m allows 5e-4 too).
  diff = np.abs(np.subtract(got, expected, out=got), out=got)
  assert diff.max() <= 5e-4, diff.max()
  assert diff[:, 512:].max() <= 5e-4  # Positions past the sliding window.
  del got, diff
  # The tokenizer files give our ids, in transformers and in our reader.
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
  read_back = tokenizer_lib.from_hf_dir(tmp_path / 'hf')
  texts = [_TEXT] + [line for line in _TEXT.splitlines() if line] + [
      '  two spaces', 'tabs\there', '<start_of_turn>user\nhi<end_of_turn>', '']
  for text in texts:
    want = ours.encode(text, add_bos=True)
    assert theirs(text).input_ids == want, text
    assert read_back.encode(text, add_bos=True) == want, text

  # GGUF, from that export (its tokenizer rebuilt from tokenizer.json): our
  # loader reads back the architecture (compared with the preset field by
  # field), every weight, and a tokenizer with our ids. That transformers'
  # GGUF loader reads our files with our logits is tested on the tiny Gemma 3
  # above (on the real file it is a 2-minute dequantizing load of what our
  # reader already checks here).
  del expected
  export.export(f'hf:{tmp_path / "hf"}', f'gguf:{tmp_path / "out.gguf"}')
  shutil.rmtree(tmp_path / 'hf')
  # The rebuilt tokenizer metadata is the embedded file's: every piece, type
  # and flag; the scores too except on the single characters (listed after
  # every merged piece), which sit a constant lower in the file (31: an offset
  # of its SentencePiece training; no merge produces a single character, so
  # no reader's merge order depends on it).
  got = _fields(tmp_path / 'out.gguf')
  want = _fields(paths.embedded_gguf())
  assert got.keys() <= want.keys()
  scores = 'tokenizer.ggml.scores'
  for key in got.keys() - {scores}:
    assert np.array_equal(got[key], want[key]), key
  differ = np.flatnonzero(np.asarray(got[scores]) != np.asarray(want[scores]))
  assert {len(want['tokenizer.ggml.tokens'][i]) for i in differ} == {1}, differ[:5]
  offsets = np.asarray(got[scores])[differ] - np.asarray(want[scores])[differ]
  assert len(set(offsets.tolist())) == 1, set(offsets.tolist())
  _, loaded, read_tok = gguf.load(tmp_path / 'out.gguf', real_rt.model.config)
  for text in texts:
    assert read_tok.encode(text, add_bos=True) == ours.encode(text, add_bos=True), text
  assert gguf.transformers_misreads(real_rt.model.config) == []
  loaded = params_lib.flatten(loaded)
  for key, value in params_lib.flatten(jax.device_get(real_rt.params)).items():
    tolerance = 1e-6 if key.endswith('scale') else 0  # Norms stored as 1 + w.
    np.testing.assert_allclose(loaded[key], value, atol=tolerance, rtol=tolerance,
                               err_msg=key)
