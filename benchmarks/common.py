"""What every benchmark shares: the torch reference model and the machine."""

import datetime
import importlib.metadata
import os
import platform
import time
from typing import Any, Callable

GIB = 2.0**30


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  """(result, seconds) of one call of `fn` (which must block until done)."""
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def torch_model(dtype: str = 'float32'):
  """transformers' own GGUF load of the embedded Gemma 3 270M, in `dtype`,
  in eval mode (the reference a user would pick instead of ours)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from icl_iwl import paths  # pylint: disable=g-import-not-at-top

  path = paths.embedded_gguf()
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=getattr(torch, dtype))
  return model.eval()


def _cpu() -> tuple[str, set[str]]:
  """The CPU's model name and feature flags (from /proc/cpuinfo on Linux)."""
  try:
    with open('/proc/cpuinfo') as f:
      lines = f.read().splitlines()
    name = next(l.split(':', 1)[1].strip() for l in lines
                if l.startswith('model name'))
    flags = set(next(l.split(':', 1)[1] for l in lines
                     if l.startswith('flags')).split())
    return name, flags
  except (OSError, StopIteration):
    return platform.processor(), set()


def machine() -> dict[str, Any]:
  """Cores, CPU, its vector flags (AVX2, AVX-512, native bf16: AVX512-BF16 and
  AMX), thread counts, versions, date."""
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  cpu, flags = _cpu()
  versions = {}
  for package in ('transformers', 'lm_eval'):
    try:
      versions[package] = importlib.metadata.version(package.replace('_', '-'))
    except importlib.metadata.PackageNotFoundError:
      pass
  return {
      'cpu': cpu,
      'cpu_bf16': sorted(flags & {'avx512_bf16', 'amx_bf16'}),
      'cpu_flags': sorted(flags & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile'}),
      'cores': os.cpu_count(),
      'torch_threads': torch.get_num_threads(),
      'jax': jax.__version__,
      'jax_devices': len(jax.devices()),
      'torch': torch.__version__,
      **versions,
      'python': platform.python_version(),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
  }
