"""Text embeddings from the loaded model, for the `embedding` similarity.

    embed = embedding.model_embedder(model, params, tok)
    embed = retrieval.cached(embed, embedding.model_key(config.model, config.seed))
    vectors = embed(['the red dog', 'the cat'])   # float32 [N, D]

A text's vector is the mean of the model's final-normed hidden states over
its tokens (BOS is fed first, as in training, but left out of the mean: its
state is the same for every text). Texts are run in batches of similar
length, right-padded to a power of two (few compiled shapes), never cut.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from icl_iwl.data import retrieval
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.model import cache as cache_lib
from icl_iwl.model import gemma


def model_key(model_config: ml_collections.ConfigDict, seed: int) -> str:
  """What `model_embedder` of this model config computes with, for
  `retrieval.cached`: checkpoint, preset, dtype (and the seed of a random
  init). A 'run:WORKDIR' without '@step' names its newest checkpoint, which
  moves while that run trains: pin the step."""
  key = f'{model_config.checkpoint}|{model_config.preset}|{model_config.dtype}'
  return key + (f'|seed={seed}' if model_config.checkpoint == 'random' else '')


def model_embedder(model: gemma.Transformer, params: Any,
                   tok: tokenizer_lib.Tokenizer, batch_size: int = 32,
                   min_length: int = 16) -> retrieval.Embed:
  """embed(texts) -> float32 [N, D]: mean-pooled hidden states (module doc).

  Args:
    model: the Transformer; LoRA adapters and remat are dropped, so pass the
      base params.
    params: its params (host or device arrays).
    tok: its tokenizer.
    batch_size: texts per forward pass (B).
    min_length: shortest padded length (T), a power of two.
  """
  model = model.clone(lora=None, remat='none')

  @jax.jit
  def pooled(params, tokens_BT, segment_ids_BT):
    positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    hidden_BTD, _ = model.apply(
        {'params': params}, tokens_BT, positions_BT,
        cache_lib.causal_mask(segment_ids_BT), return_hidden=True)
    weight_BT = ((segment_ids_BT != 0) & (positions_BT > 0)).astype(jnp.float32)
    sum_BD = jnp.einsum('BTD,BT->BD', hidden_BTD.astype(jnp.float32), weight_BT)
    return sum_BD / jnp.maximum(weight_BT.sum(1), 1.0)[:, None]

  def embed(texts: Sequence[str]) -> np.ndarray:
    ids = tok.encode_batch(list(texts), add_bos=True)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out_ND = np.zeros((len(ids), model.config.embed_dim), np.float32)
    for start in range(0, len(order), batch_size):
      rows = order[start:start + batch_size]
      length = max(min_length, 1 << (max(len(ids[i]) for i in rows) - 1).bit_length())
      tokens_BT = np.full((batch_size, length), tok.pad_id, np.int32)
      segments_BT = np.zeros((batch_size, length), np.int32)
      for r, i in enumerate(rows):
        tokens_BT[r, :len(ids[i])] = ids[i]
        segments_BT[r, :len(ids[i])] = 1
      out_ND[rows] = np.asarray(pooled(params, tokens_BT, segments_BT))[:len(rows)]
    return out_ND

  return embed
