"""Loaders: tiny random transformers models round-trip to identical logits;
bad checkpoints fail with errors that name the problem."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from icl_iwl.checkpoints import gguf
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints.params import CheckpointError
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
  wrong = hf.config_from_hf(_gemma3().to_dict())
  wrong = presets.GemmaConfig(**{**wrong.__dict__, 'head_dim': 32, 'name': 'mine'})
  with pytest.raises(CheckpointError) as error:
    hf.load(tmp_path, wrong)
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
