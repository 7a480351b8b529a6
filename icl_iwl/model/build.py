"""The Transformer a model config (`config_lib.model()`) describes."""

import jax.numpy as jnp
import ml_collections

from icl_iwl.model import gemma
from icl_iwl.model import lora as lora_lib
from icl_iwl.model import presets

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def dtype(name: str):
  """jnp dtype from its config name."""
  if name not in DTYPES:
    raise ValueError(f'Unknown dtype {name!r}; use one of {sorted(DTYPES)}.')
  return DTYPES[name]


def lora(config: ml_collections.ConfigDict) -> lora_lib.LoraConfig | None:
  """The adapters of a model config (None: no LoRA)."""
  if not config.lora.rank:
    return None
  return lora_lib.LoraConfig(config.lora.rank, config.lora.alpha,
                             tuple(config.lora.targets))


def model(config: ml_collections.ConfigDict) -> gemma.Transformer:
  """The (untrained) module of `config.preset` in the config's dtypes, with its
  LoRA, remat and layer-scan settings; `lora.trainable(model.lora)` says what
  trains."""
  return gemma.Transformer(
      presets.get(config.preset), dtype=dtype(config.dtype),
      param_dtype=dtype(config.param_dtype), remat=config.remat,
      lora=lora(config), scan_layers=config.scan_layers)
