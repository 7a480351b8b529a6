"""Sizes a training run before paying for it: per-device memory and FLOPs.

    python -m icl_iwl.plan --config=configs/finetune.py:reversals \
        --config.model.preset=gemma3_12b --devices=8 \
        --config.mesh="(('data',1),('fsdp',8),('tensor',1))"

Compiles the real train step (same function, shardings and batch shape as
training) for a mesh of `--devices` fake CPU devices, without loading or
allocating any weights, and prints XLA's memory analysis (per device) and
cost analysis. CPU buffer assignment approximates a TPU's; leave headroom.

    python -m icl_iwl.plan --table=gemma3_4b --devices=16

prints the table of `TABLE_ROWS` for a preset instead (scanned layers, f32
master weights, batch 8 x 512, FSDP over each row's device count), then the
suggested mesh per TPU slice in `SLICES`: the row of that many devices with
the lowest peak that fits the chip's HBM.
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

# (FSDP size, tensor size, LoRA rank, compute dtype, remat) of each table
# row; it uses FSDP x tensor devices. Batch 8 splits over FSDP only, so 16
# devices are FSDP 8 x tensor 2.
TABLE_ROWS = (
    (8, 1, 0, 'float32', 'full'), (8, 1, 0, 'bfloat16', 'full'),
    (8, 1, 0, 'bfloat16', 'save_dots'), (8, 1, 0, 'bfloat16', 'none'),
    (8, 1, 16, 'float32', 'full'), (8, 1, 16, 'bfloat16', 'full'),
    (4, 1, 0, 'bfloat16', 'full'), (4, 1, 16, 'bfloat16', 'full'),
    (8, 2, 0, 'bfloat16', 'full'),
)
# TPU slices: (name, chips, HBM GiB per chip). A v4-8 or v5p-8 has 4 chips
# (8 TensorCores), a v5litepod-8 (v5e-8) 8.
SLICES = (('v5e-8', 8, 16.0), ('v4-8', 4, 32.0), ('v5p-8', 4, 95.0))


def plan(config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None,
         peak_tflops: float = 197.0) -> dict:
  """Compiles the train step of `config` abstractly over `devices` (default:
  all); returns the figures (the ideal step time at `peak_tflops` per
  device)."""
  tc = config.train
  rt = runtime.abstract(config, devices)
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
      'model_flops_per_step': tr.flops(None),
      'ideal_step_seconds': tr.flops(None) / (peak_tflops * 1e12 * rt.mesh.size),
  }


def table(config: ml_collections.ConfigDict, preset: str) -> list[str]:
  """Markdown lines: the plan of each row of TABLE_ROWS that the devices
  allow, then the suggested mesh per slice (module doc)."""
  lines = [f'{preset}, scanned layers, f32 master weights, batch '
           f'{config.train.batch_size} x {config.train.seq_len}:', '',
           '| devices | mesh | mode | compute | remat | arguments / device | '
           'temporaries / device | peak / device |', '|---|---|---|---|---|---:|---:|---:|']
  peaks = {}
  for fsdp, tensor, rank, dtype, remat in TABLE_ROWS:
    devices = fsdp * tensor
    if devices > jax.device_count():
      continue
    row = ml_collections.ConfigDict(config.to_dict())
    row.model.update(preset=preset, dtype=dtype, remat=remat, scan_layers=True)
    row.model.lora.rank = rank
    row.mesh = (('data', 1), ('fsdp', fsdp), ('tensor', tensor))
    m = plan(row, jax.devices()[:devices])['per_device']
    mode = f'LoRA rank {rank}' if rank else 'full FT'
    mesh = f'fsdp={fsdp}' + (f', tensor={tensor}' if tensor > 1 else '')
    peaks[devices, mode, dtype, remat, mesh] = m['peak_gib']
    lines.append(f'| {devices} | {mesh} | {mode} | {dtype} | {remat} | '
                 f'{m["arguments_gib"]:.2f} GiB | {m["temporaries_gib"]:.2f} GiB '
                 f'| {m["peak_gib"]:.2f} GiB |')
    print(lines[-1], flush=True)  # Progress: big presets take minutes a row.
  lines += ['', '| slice | chips x HBM | full FT | LoRA rank 16 |', '|---|---|---|---|']
  for name, chips, hbm in SLICES:
    cells = []
    for lora in (False, True):
      fits = sorted((peak, key) for key, peak in peaks.items()
                    if key[0] == chips and key[1].startswith('LoRA') == lora and peak <= hbm)
      if fits:
        peak, (_, _, dtype, remat, mesh) = fits[0]
        cells.append(f'{mesh}, {dtype}, remat {remat}: {peak:.2f} GiB')
      else:
        cells.append('does not fit (no planned row fits)')
    lines.append(f'| {name} | {chips} x {hbm:.0f} GiB | {cells[0]} | {cells[1]} |')
  return lines


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run, so the module imports
  beside icl_iwl.main, which has its own --config)."""
  config_flags.DEFINE_config_file(
      'config', None, 'A training config, path[:arg].', lock_config=True)
  flags.DEFINE_integer('devices', 8, 'Fake CPU devices to plan for (the slice size).')
  flags.DEFINE_float(
      'peak_tflops', 197.0, 'Per-device peak TFLOP/s of the target (v5e: 197).')
  flags.DEFINE_string(
      'table', '', 'A preset: print its table of TABLE_ROWS instead of one plan.')


def main(argv: list[str]) -> None:
  del argv
  config = FLAGS.config
  if FLAGS.table:
    print('\n'.join(['', *table(config, FLAGS.table)]))
    return
  config_lib.validate(config, jax.device_count())
  result = plan(config, peak_tflops=FLAGS.peak_tflops)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  define_flags()
  app.run(errors.main_wrapper(main), flags_parser=config_lib.parse_flags)
