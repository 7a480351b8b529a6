r"""Forward pass of the real Gemma 3 270M: our JAX model vs transformers (torch).

Both sides compute full float32-or-dtype logits [B, T, V] for the same random
token ids, in one process, at each compute dtype; timed repeats alternate
between the two so machine noise hits both alike, and the median is reported.

  python benchmarks/forward.py --batch=8 --length=256 \
      --dtypes=float32,bfloat16 --repeats=5

Logs go to stderr; the last stdout line is one JSON object:
  {"benchmark": "forward", "batch": 8, "length": 256,
   "float32": {"ours_tok_s": ..., "torch_tok_s": ..., "ratio": ...,
               "max_abs_logit_diff": ...},
   "bfloat16": {..., "ours_max_diff_to_f32": ..., "torch_max_diff_to_f32": ...,
                "ours_max_diff_to_own_f32": ...},
   "machine": {...}}
ratio = ours / torch tokens per second (> 1: ours is faster). Precision of a
lower dtype: max |logits - float32 logits| on the same tokens, each side
against torch's float32 logits (`*_max_diff_to_f32`), and ours against our
own (`ours_max_diff_to_own_f32`); float32 must run first, as by default.

Ours: `gemma.Transformer(config, dtype=d, param_dtype=d)` with params cast to d,
jitted, compile excluded. Torch: `AutoModelForCausalLM.from_pretrained(dir,
gguf_file=name, dtype=d)` in `torch.inference_mode()`, without a KV cache
(`use_cache=False`; ours returns only the logits, so neither keeps one).
"""

import gc
import json
import statistics
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import common  # benchmarks/common.py: a script's own directory is on sys.path.

from icl_iwl.checkpoints import gguf
from icl_iwl.model import cache
from icl_iwl.model import gemma

_BATCH = flags.DEFINE_integer('batch', 8, 'Sequences per forward pass (B).')
_LENGTH = flags.DEFINE_integer('length', 256, 'Tokens per sequence (T).')
_DTYPES = flags.DEFINE_list(
    'dtypes', ['float32', 'bfloat16'],
    'Compute dtypes to compare; ours holds params in the same dtype.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 5, 'Timed forward passes per side and dtype (median reported), '
    'after one untimed warm-up pass.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random token ids.')
_F32_RTOL = flags.DEFINE_float(
    'f32_rtol', 1e-5,
    'Max |logit diff| / max |logit| allowed between ours and torch in float32 '
    '(random ids give logits up to ~200); exceeding it is logged as an error '
    '(the timing is still reported).')


def _ours(config, params_f32, dtype: str, tokens_BT: np.ndarray):
  """Our jitted, compiled forward pass and its inputs, params cast to `dtype`.

  Returns:
    (run: () -> [B, T, V] float32 logits ready on the host device, compile seconds).
  """
  jdtype = jnp.dtype(dtype)
  model = gemma.Transformer(config, dtype=jdtype, param_dtype=jdtype)
  params = jax.tree.map(lambda x: jnp.asarray(x, jdtype), params_f32)
  b, t = tokens_BT.shape
  tokens = jnp.asarray(tokens_BT)
  positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  mask = cache.causal_mask(jnp.ones((b, t), jnp.int32))

  def forward(params, tokens, positions, mask):
    logits, _ = model.apply({'params': params}, tokens, positions, mask)
    return logits

  start = time.perf_counter()
  compiled = jax.jit(forward).lower(params, tokens, positions, mask).compile()
  compile_s = time.perf_counter() - start
  return (lambda: compiled(params, tokens, positions, mask).block_until_ready(),
          compile_s)


def _compare(config, params_f32, dtype: str, tokens_BT: np.ndarray,
             f32_BTV: np.ndarray | None, ours_f32_BTV: np.ndarray | None
             ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
  """Times ours and torch at one dtype; checks that their logits agree.

  Args:
    config: the 270M's GemmaConfig.
    params_f32: its float32 params.
    dtype: the compute (and param) dtype of both sides.
    tokens_BT: [B, T] token ids.
    f32_BTV: torch's float32 logits [B, T, V] from an earlier float32 run, or
      None; if given, each side's max |logit diff| to them is reported.
    ours_f32_BTV: ours from that run; if given, our max |logit diff| to them.

  Returns:
    (the result dict, torch's and our logits at `dtype` as float32 [B, T, V]).
  """
  import torch  # pylint: disable=g-import-not-at-top

  b, t = tokens_BT.shape
  run_ours, compile_s = _ours(config, params_f32, dtype, tokens_BT)
  logging.info('%s: ours compiled in %.1fs', dtype, compile_s)
  ours_logits = np.asarray(run_ours())  # Warm-up; [B, T, V] float32.
  to_f32 = {}
  if ours_f32_BTV is not None and dtype != 'float32':
    to_f32['ours_max_diff_to_own_f32'] = float(np.abs(ours_logits - ours_f32_BTV).max())

  reference = common.torch_model(dtype)
  logging.info('%s: torch attention implementation %r', dtype,
               reference.config._attn_implementation)  # pylint: disable=protected-access
  input_ids = torch.from_numpy(tokens_BT.astype(np.int64))

  def run_torch():
    with torch.inference_mode():
      return reference(input_ids, use_cache=False).logits

  torch_logits = run_torch()  # Warm-up.
  assert torch_logits.shape == (b, t, config.vocab_size), torch_logits.shape
  torch_logits = torch_logits.float().numpy()
  diff = float(np.abs(ours_logits - torch_logits).max())
  scale = float(np.abs(torch_logits).max())
  argmax = float((ours_logits.argmax(-1) == torch_logits.argmax(-1)).mean())
  logging.info('%s: max |logit diff| ours vs torch %.3g (max |logit| %.3g), '
               'argmax agreement %.4f', dtype, diff, scale, argmax)
  if dtype == 'float32' and diff > _F32_RTOL.value * scale:
    logging.error('float32 logits differ by %.3g > %.3g * %.3g', diff,
                  _F32_RTOL.value, scale)
  if f32_BTV is not None and dtype != 'float32':
    to_f32['ours_max_diff_to_f32'] = float(np.abs(ours_logits - f32_BTV).max())
    to_f32['torch_max_diff_to_f32'] = float(np.abs(torch_logits - f32_BTV).max())
    logging.info('%s: max |logit diff| to float32: %s', dtype, to_f32)

  ours_s, torch_s = [], []
  for i in range(_REPEATS.value):
    ours_s.append(common.timed(run_ours)[1])
    torch_s.append(common.timed(run_torch)[1])
    logging.info('%s repeat %d: ours %.2fs, torch %.2fs', dtype, i, ours_s[-1],
                 torch_s[-1])
  ours_tok_s = b * t / statistics.median(ours_s)
  torch_tok_s = b * t / statistics.median(torch_s)
  return {
      'ours_tok_s': round(ours_tok_s, 1),
      'torch_tok_s': round(torch_tok_s, 1),
      'ratio': round(ours_tok_s / torch_tok_s, 3),
      'ours_s': [round(s, 3) for s in ours_s],
      'torch_s': [round(s, 3) for s in torch_s],
      'ours_compile_s': round(compile_s, 1),
      'max_abs_logit_diff': diff,
      'max_abs_logit': scale,
      'argmax_agreement': argmax,
      **to_f32,
  }, torch_logits, ours_logits


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config, params_f32 = gguf.load_embedded()
  rng = np.random.default_rng(_SEED.value)
  tokens_BT = rng.integers(0, config.vocab_size, (_BATCH.value, _LENGTH.value),
                           dtype=np.int32)
  result = {'benchmark': 'forward', 'batch': _BATCH.value,
            'length': _LENGTH.value, 'repeats': _REPEATS.value}
  # Float32 logits (torch's, ours): the yardsticks of lower precisions.
  f32_BTV = ours_f32_BTV = None
  for dtype in _DTYPES.value:
    result[dtype], logits_BTV, ours_BTV = _compare(
        config, params_f32, dtype, tokens_BT, f32_BTV, ours_f32_BTV)
    if dtype == 'float32':
      f32_BTV, ours_f32_BTV = logits_BTV, ours_BTV
    del logits_BTV, ours_BTV
    gc.collect()
  result['machine'] = common.machine()
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
