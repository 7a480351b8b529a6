"""Sizes a training run before paying for it: per-device memory and FLOPs.

    python -m icl_iwl.plan --config=configs/finetune.py:reversals \
        --config.model.preset=gemma3_12b --devices=8 \
        --config.mesh="(('data',1),('fsdp',8),('tensor',1))"

Compiles the real train step (same function, shardings and batch shape as
training) for a mesh of `--devices` fake CPU devices, without loading or
allocating any weights, and prints XLA's memory analysis (per device) and
cost analysis. CPU buffer assignment approximates a TPU's; leave headroom.
"""

import os
import sys


def _fake_devices(argv: list[str]) -> None:
  """Requests N host devices; must run before jax is imported."""
  count = next((a.split('=', 1)[1] for a in argv if a.startswith('--devices=')), '8')
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={count}')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')


if __name__ == '__main__':
  _fake_devices(sys.argv)

# pylint: disable=g-import-not-at-top,wrong-import-position
import json  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from icl_iwl import config_lib  # noqa: E402
from icl_iwl import errors  # noqa: E402
from icl_iwl import runtime  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A training config, path[:arg].', lock_config=True)
flags.DEFINE_integer('devices', 8, 'Fake CPU devices to plan for (the slice size).')
_PEAK = flags.DEFINE_float(
    'peak_tflops', 197.0, 'Per-device peak TFLOP/s of the target (v5e: 197).')


def plan(config: ml_collections.ConfigDict) -> dict:
  """Compiles the train step of `config` abstractly; returns the figures."""
  tc = config.train
  rt = runtime.abstract(config)
  tr = runtime.trainer(config, rt)
  memory = tr.step.memory_analysis()
  per_device = {
      'arguments_gib': memory.argument_size_in_bytes / 2**30,
      'outputs_gib': memory.output_size_in_bytes / 2**30,
      'aliased_gib': memory.alias_size_in_bytes / 2**30,
      'temporaries_gib': memory.temp_size_in_bytes / 2**30,
  }
  per_device['peak_gib'] = (per_device['arguments_gib'] + per_device['outputs_gib']
                            - per_device['aliased_gib'] + per_device['temporaries_gib'])
  return {
      'preset': config.model.preset, 'lora_rank': config.model.lora.rank,
      'dtype': config.model.dtype, 'mesh': dict(rt.mesh.shape),
      'batch': tc.batch_size, 'seq_len': tc.seq_len, 'accum': tc.accum,
      'per_device': per_device,
      'xla_flops_per_device': tr.step.cost_analysis().get('flops', 0.0),
      'model_flops_per_step': tr.flops_per_step,
      'ideal_step_seconds': tr.flops_per_step / (_PEAK.value * 1e12 * jax.device_count()),
  }


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  config_lib.validate(config, jax.device_count())
  result = plan(config)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  app.run(errors.main_wrapper(main))
