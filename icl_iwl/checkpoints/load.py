"""One entry point from a model config to (model, params, tokenizer).

`config.checkpoint` is one of:
  'embedded'      the Gemma 3 270M that ships with the package (GGUF, cached);
  'gguf:PATH'     a Gemma GGUF file (its tokenizer comes from its metadata);
  'hf:DIR'        a transformers checkpoint directory (and its tokenizer);
  'random'        random init of `config.preset` (with the Gemma 3 tokenizer).
"""

from typing import Any

import jax.numpy as jnp
import ml_collections

from icl_iwl.checkpoints import gguf
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.model import gemma
from icl_iwl.model import layers
from icl_iwl.model import presets

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def dtype(name: str):
  """jnp dtype from its config name."""
  if name not in DTYPES:
    raise ValueError(f'Unknown dtype {name!r}; use one of {sorted(DTYPES)}.')
  return DTYPES[name]


def model_from_config(config: ml_collections.ConfigDict,
                      arch: presets.GemmaConfig | None = None) -> gemma.Transformer:
  """The Transformer module a model config describes."""
  lora = None
  if config.lora.rank:
    lora = layers.LoraConfig(config.lora.rank, config.lora.alpha,
                             tuple(config.lora.targets))
  return gemma.Transformer(
      arch or presets.get(config.preset), dtype=dtype(config.dtype),
      param_dtype=dtype(config.param_dtype), remat=config.remat, lora=lora)


def load(config: ml_collections.ConfigDict,
         ) -> tuple[gemma.Transformer, Any, tokenizer_lib.Tokenizer]:
  """(model, params as host numpy arrays or None for 'random', tokenizer)."""
  spec = config.checkpoint
  kind, _, path = spec.partition(':')
  preset = presets.get(config.preset)
  if kind == 'embedded':
    arch, params = gguf.load_embedded()
    tok = tokenizer_lib.load_default()
  elif kind == 'gguf':
    arch, params = gguf.load(path, preset)
    tok = tokenizer_lib.from_gguf(path)
  elif kind == 'hf':
    arch, params = hf.load(path, preset)
    tok = tokenizer_lib.from_hf_dir(path)
  elif kind == 'random':
    arch, params, tok = preset, None, tokenizer_lib.load_default()
  else:
    raise CheckpointError(
        f"Unknown checkpoint {spec!r}; use 'embedded', 'gguf:PATH', 'hf:DIR' "
        "or 'random'.")
  if arch != preset:
    raise CheckpointError(f'Checkpoint {spec!r} is a {arch.name!r} model but the '
                          f'config asks for preset {preset.name!r}.')
  if tok.vocab_size > preset.vocab_size:
    raise CheckpointError(f'The tokenizer has {tok.vocab_size} tokens but preset '
                          f'{preset.name!r} embeds only {preset.vocab_size}.')
  return model_from_config(config, arch), params, tok
