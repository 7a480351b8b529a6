"""One entry point from a model config to (model, params, tokenizer).

`config.checkpoint` is one of:
  'embedded'      the Gemma 3 270M that ships with the package (GGUF, cached);
  'gguf:PATH'     a Gemma GGUF file (weights and tokenizer, read once);
  'hf:DIR'        a transformers checkpoint directory (and its tokenizer);
  'random'        random init of `config.preset` (with the Gemma 3 tokenizer).

The checkpoint must have the architecture of `config.preset`; if not, a
CheckpointError names every differing field with both values.
"""

from typing import Any

import ml_collections

from icl_iwl.checkpoints import gguf
from icl_iwl.checkpoints import hf
from icl_iwl.checkpoints import params as params_lib
from icl_iwl.checkpoints.params import CheckpointError
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.model import build
from icl_iwl.model import gemma
from icl_iwl.model import presets

def load(config: ml_collections.ConfigDict,
         ) -> tuple[gemma.Transformer, Any, tokenizer_lib.Tokenizer]:
  """(model, params as host numpy arrays or None for 'random', tokenizer)."""
  spec = config.checkpoint
  kind, _, path = spec.partition(':')
  preset = presets.get(config.preset)
  if kind == 'embedded':
    arch, params = gguf.load_embedded()
    params_lib.check_architecture(arch, preset, 'the embedded Gemma 3 270M')
    tok = tokenizer_lib.load_default()
  elif kind == 'gguf':
    _, params, tok = gguf.load(path, preset)
  elif kind == 'hf':
    _, params = hf.load(path, preset)
    tok = tokenizer_lib.from_hf_dir(path)
  elif kind == 'random':
    params, tok = None, tokenizer_lib.load_default()
  else:
    raise CheckpointError(
        f"Unknown checkpoint {spec!r}; use 'embedded', 'gguf:PATH', 'hf:DIR' "
        "or 'random'.")
  if tok.vocab_size > preset.vocab_size:
    raise CheckpointError(f'The tokenizer has {tok.vocab_size} tokens but preset '
                          f'{preset.name!r} embeds only {preset.vocab_size}.')
  return build.model(config), params, tok
