r"""A full fine-tuning step of the real Gemma 3 270M: ours vs transformers (torch).

Each side trains all parameters of the embedded Gemma 3 270M on the same
random tokens [B, L] (a fixed seed; the same batch every step): next-token
cross-entropy, mean over the targets, then one AdamW update with the same
hyper-parameters. One step = forward + backward + optimizer update. The
targets are every token but the first (knowledge fine-tuning, the default)
or, with --target_fraction=f, the last f * L tokens of each row (an IC-Train
batch: the loss on the target after its context).

  flock /tmp/heavy.lock python benchmarks/train_step.py --batch=8 \
      --length=128 --dtypes=float32,bfloat16 --steps=3
  flock /tmp/heavy.lock python benchmarks/train_step.py --batch=8 \
      --length=256 --target_fraction=0.1 --dtypes=float32,bfloat16 --steps=3

Logs go to stderr; the last stdout line is one JSON object:
  {"benchmark": "train_step", "batch": 8, "length": 128, "target_fraction": 1.0,
   "float32": {"ours_tok_s": ..., "torch_tok_s": ..., "ratio": ...,
               "ours_peak_gib": ..., "torch_peak_gib": ..., "memory_ratio": ...,
               "ours_mfu": ..., "ours_loss": ..., "torch_loss": ...,
               "ours_target_slots": ..., ...},
   "bfloat16": {...}, "machine": {...}}
ratio = ours / torch tokens per second (> 1: ours is faster); memory_ratio =
ours / torch peak resident memory (< 1: ours needs less).

Ours runs the training loop's own code: the run setup of `icl_iwl/runtime.py`
(`load_host`, `trainer`, `Trainer.create_state`, `Trainer.run`) on
`configs/finetune.py` (full fine-tuning; ':bf16' for bfloat16), fed a batch
dict {tokens, segment_ids = 1, positions = 0..L-1, loss_mask}. `Trainer.run`
gathers the hidden states at the target positions before the vocabulary
projection when the targets are at most half a row (`step.target_slots`,
reported as `ours_target_slots`; null: every position is projected). The
only config change is a constant learning rate (no warm-up: the warm-up would
start at lr 0). Torch: `AutoModelForCausalLM.from_pretrained(dir,
gguf_file=name, dtype=float32)` in train mode, `model(ids, labels=labels,
use_cache=False).loss` with labels = the ids at targets and -100 elsewhere
(full logits, the same mask; transformers shifts the labels itself),
`backward()`, `clip_grad_norm_`, `torch.optim.AdamW` (`--torch_adamw`
implementation). Both optimizers: lr, b1, b2, eps = 1e-8 and weight decay
from the finetune config, decay only on matrices (ndim > 1), gradients
clipped to the config's global norm first.

dtypes:
  float32   both sides: f32 params, f32 compute, f32 optimizer state.
  bfloat16  mixed precision on both sides, f32 master weights and optimizer
            state. Ours: `Transformer(dtype=bfloat16, param_dtype=float32)`:
            every matmul casts its inputs to bf16 and accumulates in f32;
            logits come out in f32; norms, softmax and the loss run in f32.
            Torch: the same f32 model with forward and loss inside
            `torch.autocast('cpu', dtype=torch.bfloat16)` (linear layers and
            matmuls in bf16, logits bf16, upcast to f32 by the loss), backward
            and the optimizer step outside it (the documented recipe).
            On a CPU without native bf16 instructions (no AVX512-BF16/AMX) both
            sides emulate bf16 and may well be slower than in f32; torch's
            bf16 matmul is then a slow fallback (on an AVX2-only EPYC, ~50x
            below its f32 rate), which dominates its bf16 step. The JSON says
            what this CPU has (`machine.cpu_bf16`). There,
            --torch_bf16=float32 compares our bf16 step with torch's float32
            one (`torch_dtype` in the JSON): the fastest torch has.

Each (side, dtype) runs in its own worker subprocess (this script with
--side), so peak memory and timing are per side. A worker loads, sets up (ours:
compile, timed separately as `ours_compile_s`), runs `--warmup` untimed steps,
then times one step per request; the driver alternates requests between the
two workers (which of the two goes first alternates too) so machine noise hits
both alike. `--noalternate` runs ours, then torch, with one worker alive at a
time (half the memory, no interleaving). tokens/s = B * L / median step
seconds.

Memory: VmHWM (peak resident set) of each worker. `*_peak_gib` covers the
timed steps: the high-water mark is reset after the warm-up steps (writing 5
to /proc/self/clear_refs), so it is the resident size of a training process in
steady state, model, optimizer state and the step's transients included.
`*_resident_gib` is the resident set between two steps (VmRSS after the
warm-up: what the process holds, before a step's transients).
`*_process_peak_gib` is the peak of the whole worker, load, state creation and
compile included (transformers' GGUF dequantization and our state creation
each hold extra copies of the weights for a moment).

MFU (ours and, for reference, torch): `mfu.train_flops(config, B, L, slots)`
/ (B L) * tokens/s / `mfu.peak_flops(dtype)` (the vocabulary projection
counted at the positions our step projects: all of them, or the gathered
target slots), the peak being this CPU's measured matmul
rate in the compute dtype (measured in our worker, nothing else running).

Host memory: our worker starts with the glibc malloc tunables our jobs
restart with (`icl_iwl/hostmem.py`: freed memory stays mapped, so a step
does not page-fault its temporaries in anew), torch's with glibc's defaults
(as a transformers user runs it) unless --torch_tunables;
`*_glibc_tunables` and the minor page faults of each timed step
(`*_page_faults`) are in the JSON.

Checks (logged as errors; the numbers are still reported): the two sides get
the same tokens; in float32 the first-step losses (before any update) agree
within --f32_loss_tolerance; the loss decreases over the steps on each side.
"""

import gc
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import numpy as np

import common  # benchmarks/common.py: a script's own directory is on sys.path.
from icl_iwl import hostmem

_BATCH = flags.DEFINE_integer('batch', 8, 'Sequences per step (B).')
_LENGTH = flags.DEFINE_integer('length', 128, 'Tokens per sequence (L).')
_DTYPES = flags.DEFINE_list(
    'dtypes', ['float32', 'bfloat16'],
    'Compute dtypes to compare (float32: f32 everywhere; bfloat16: bf16 '
    'compute with f32 master weights on both sides).')
_STEPS = flags.DEFINE_integer(
    'steps', 3, 'Timed steps per side and dtype (median reported).')
_WARMUP = flags.DEFINE_integer(
    'warmup', 1, 'Untimed steps per side before the timed ones (after our '
    'compile, which is never timed as a step).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random token ids.')
_SCAN = flags.DEFINE_bool(
    'scan_layers', False, 'Ours with its layers stacked and scanned (the '
    "larger presets' layout; the 270M's default is per layer).")
_TORCH_BF16 = flags.DEFINE_enum(
    'torch_bf16', 'bfloat16', ['bfloat16', 'float32'],
    "Torch's dtype when ours runs bfloat16 (float32: its fastest on a CPU "
    'without native bf16, where its bf16 matmuls are a slow fallback).')
_TARGET_FRACTION = flags.DEFINE_float(
    'target_fraction', 1.0, 'The loss is on the last fraction of each row '
    '(1: every token, knowledge fine-tuning; 0.1: an IC-Train batch).')
_ALTERNATE = flags.DEFINE_bool(
    'alternate', True, 'Keep both workers alive and alternate their timed '
    'steps; --noalternate runs one worker at a time (half the memory).')
_PAUSE = flags.DEFINE_float(
    'pause', 0.5, 'Seconds of idle between two timed steps (lets the other '
    "side's worker threads go to sleep).")
_TORCH_ADAMW = flags.DEFINE_enum(
    'torch_adamw', 'fused', ['fused', 'foreach', 'for_loop'],
    'torch.optim.AdamW implementation (fused: its fastest CPU kernel).')
_TORCH_TUNABLES = flags.DEFINE_bool(
    'torch_tunables', False,
    "Run torch's worker with our glibc malloc tunables too (hostmem.py).")
_F32_LOSS_TOLERANCE = flags.DEFINE_float(
    'f32_loss_tolerance', 1e-3,
    'Max |first-step loss diff| allowed between ours and torch in float32.')
# Internal: the driver starts one worker per (side, dtype) with these.
_SIDE = flags.DEFINE_enum('side', None, ['ours', 'torch'],
                          'Internal: run as the worker of this side.')
_DTYPE = flags.DEFINE_string('dtype', None, 'Internal: the worker dtype.')
_HPARAMS = flags.DEFINE_string(
    'hparams', None, 'Internal: JSON optimizer hyper-parameters for torch.')

_FINETUNE_CONFIG = (pathlib.Path(__file__).resolve().parent.parent / 'configs'
                    / 'finetune.py')


# ----------------------------------------------------------------------------
# Memory and machine.


def _proc_status_bytes(field: str) -> int | None:
  """A kB field of /proc/self/status (VmHWM: peak, VmRSS: current resident
  set) in bytes, if /proc has it."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(f'{field}:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _vm_hwm_bytes() -> int | None:
  """This process's peak resident set (VmHWM) in bytes, if /proc has it."""
  return _proc_status_bytes('VmHWM')


def _process_peak_bytes() -> int:
  """Peak resident set of this process so far (ru_maxrss, or VmHWM)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  rss *= 1 if sys.platform == 'darwin' else 1024  # Linux reports KiB.
  return max(rss, _vm_hwm_bytes() or 0)


def _reset_peak() -> bool:
  """Resets VmHWM to the current resident set; False if the kernel refuses."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


# ----------------------------------------------------------------------------
# Config and data shared by both sides.


def _config(dtype: str, batch: int, length: int):
  """configs/finetune.py (full fine-tuning, ':bf16' for bfloat16) for this
  batch shape, with a constant learning rate."""
  from icl_iwl import config_lib  # pylint: disable=g-import-not-at-top

  if dtype not in ('float32', 'bfloat16'):
    raise app.UsageError(f'dtype must be float32 or bfloat16, not {dtype!r}.')
  arg = 'reversals,bf16' if dtype == 'bfloat16' else 'reversals'
  config = config_lib.load_file(f'{_FINETUNE_CONFIG}:{arg}')
  assert not config.model.lora.rank, 'The benchmark is full fine-tuning.'
  assert config.model.dtype == dtype and config.model.param_dtype == 'float32'
  config.train.update(batch_size=batch, seq_len=length, accum=1,
                      schedule='constant', warmup_steps=0)
  config.model.scan_layers = _SCAN.value
  return config


def _hparams(config) -> dict[str, float]:
  """The AdamW hyper-parameters `optim.optimizer(config.train)` uses."""
  from icl_iwl.train import optim  # pylint: disable=g-import-not-at-top
  tc = config.train
  return {'lr': tc.learning_rate, 'b1': tc.b1, 'b2': tc.b2, 'eps': optim.ADAM_EPS,
          'weight_decay': tc.weight_decay, 'grad_clip': tc.grad_clip}


def _batch(vocab_size: int, batch: int, length: int, seed: int,
           target_fraction: float) -> dict[str, np.ndarray]:
  """A [B, L] batch of random token ids (the same on both sides), one
  sequence per row; the loss is on the last `target_fraction` of each row's
  tokens (1: every token, as knowledge fine-tuning; 0.1: an IC-Train
  target after its context), never on the first token."""
  rng = np.random.default_rng(seed)
  tokens_BL = rng.integers(0, vocab_size, (batch, length), dtype=np.int32)
  first = max(1, length - round(target_fraction * length))
  loss_mask_BL = np.zeros_like(tokens_BL)
  loss_mask_BL[:, first:] = 1
  return {
      'tokens': tokens_BL,
      'segment_ids': np.ones_like(tokens_BL),
      'positions': np.broadcast_to(np.arange(length, dtype=np.int32),
                                   tokens_BL.shape).copy(),
      'loss_mask': loss_mask_BL,
  }


# ----------------------------------------------------------------------------
# Workers: set up, warm up, then one timed step per request.


def _ours_setup(dtype: str, batch: int, length: int, seed: int,
                target_fraction: float
                ) -> tuple[Callable[[], float], dict[str, Any]]:
  """Our training step as the loop runs it (`runtime.load_host`,
  `runtime.trainer`, `Trainer.run`); returns (step, info)."""
  import jax  # pylint: disable=g-import-not-at-top
  from icl_iwl import runtime  # pylint: disable=g-import-not-at-top
  from icl_iwl.train import mfu  # pylint: disable=g-import-not-at-top
  from icl_iwl.train import step as step_lib  # pylint: disable=g-import-not-at-top

  config = _config(dtype, batch, length)
  rt, base = runtime.load_host(config)
  tr = runtime.trainer(config, rt)
  assert np.isclose(float(tr.schedule(0)), config.train.learning_rate)
  host_batch = _batch(rt.model.config.vocab_size, batch, length, seed,
                      target_fraction)
  assert set(host_batch) == set(step_lib.BATCH_KEYS)
  slots = step_lib.target_slots(host_batch)
  targets = int(step_lib.target_weights(host_batch).sum())

  start = time.perf_counter()
  tr.compile(slots)  # What `tr.run` compiles on its first call.
  compile_s = time.perf_counter() - start
  logging.info('ours %s: compiled in %.1fs (%s target slots per row)', dtype,
               compile_s, slots)
  holder = {'state': tr.create_state(rt, base, config.seed)}
  del base
  gc.collect()

  def step() -> float:
    holder['state'], m = tr.run(holder['state'], host_batch)
    jax.block_until_ready((holder['state'], m))
    if int(m['targets']) != targets or not bool(m['params_finite']):
      raise FloatingPointError(f'ours: targets {float(m["targets"])}, params '
                               f'finite {bool(m["params_finite"])}')
    return float(m['loss'])

  info = {'compile_s': compile_s, 'slots': slots, 'targets': targets,
          'tokens_sum': int(host_batch['tokens'].astype(np.int64).sum()),
          'mask_sum': int(host_batch['loss_mask'].sum()),
          'flops_per_token': tr.flops(slots) / (batch * length),
          '_peak': lambda: mfu.peak_flops(rt.model.dtype)}
  return step, info


def _torch_setup(dtype: str, batch: int, length: int, seed: int,
                 target_fraction: float, hparams: dict[str, float], adamw: str
                 ) -> tuple[Callable[[], float], dict[str, Any]]:
  """transformers' GGUF load of the model, trained with torch AdamW."""
  import torch  # pylint: disable=g-import-not-at-top

  model = common.torch_model('float32').train()
  params = list(model.parameters())  # Tied embedding/output counted once.
  assert all(p.requires_grad and p.dtype == torch.float32 for p in params)
  groups = [
      {'params': [p for p in params if p.ndim > 1],
       'weight_decay': hparams['weight_decay']},
      {'params': [p for p in params if p.ndim <= 1], 'weight_decay': 0.0},
  ]
  impl = {'fused': {'fused': True}, 'foreach': {'foreach': True},
          'for_loop': {'foreach': False}}[adamw]
  optimizer = torch.optim.AdamW(groups, lr=hparams['lr'],
                                betas=(hparams['b1'], hparams['b2']),
                                eps=hparams['eps'], **impl)
  attn = model.config._attn_implementation  # pylint: disable=protected-access
  logging.info('torch %s: attention %r, AdamW %s, %d threads', dtype, attn,
               adamw, torch.get_num_threads())

  host_batch = _batch(model.config.vocab_size, batch, length, seed,
                      target_fraction)
  tokens_BL = host_batch['tokens']
  input_ids = torch.from_numpy(tokens_BL.astype(np.int64))
  # Full logits, the loss on the targets only (-100: ignored).
  labels = torch.from_numpy(np.where(host_batch['loss_mask'] == 1, tokens_BL,
                                     -100).astype(np.int64))
  autocast = dtype == 'bfloat16'

  def step() -> float:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
      loss = model(input_ids=input_ids, labels=labels, use_cache=False).loss
    loss.backward()
    if hparams['grad_clip']:
      torch.nn.utils.clip_grad_norm_(params, hparams['grad_clip'])
    optimizer.step()
    return loss.item()

  info = {'tokens_sum': int(tokens_BL.astype(np.int64).sum()),
          'mask_sum': int(host_batch['loss_mask'].sum()),
          'attention': attn, 'adamw': adamw,
          'threads': torch.get_num_threads()}
  return step, info


def _worker(side: str, dtype: str) -> None:
  """Serves the driver: a 'ready' line, then one 'step' line per request.

  Protocol lines are JSON on the original stdout; anything else this process
  prints goes to stderr.
  """
  proto = os.fdopen(os.dup(1), 'w', buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr

  def send(**message):
    proto.write(json.dumps(message) + '\n')
    proto.flush()

  batch, length, seed = _BATCH.value, _LENGTH.value, _SEED.value
  fraction = _TARGET_FRACTION.value
  start = time.perf_counter()
  if side == 'ours':
    step, info = _ours_setup(dtype, batch, length, seed, fraction)
  else:
    step, info = _torch_setup(dtype, batch, length, seed, fraction,
                              json.loads(_HPARAMS.value), _TORCH_ADAMW.value)
  setup_s = time.perf_counter() - start
  warmup_losses, warmup_s = [], []
  for i in range(_WARMUP.value):
    start = time.perf_counter()
    warmup_losses.append(step())
    warmup_s.append(time.perf_counter() - start)
    logging.info('%s %s: warm-up step %d %.2fs, loss %.5f', side, dtype, i,
                 warmup_s[-1], warmup_losses[-1])
  peak = info.pop('_peak', None)
  if peak is not None:  # Our measured matmul peak, before anything is timed.
    info['peak_flops'] = peak()
  gc.collect()
  if side == 'ours':  # As the training loop does after its first step.
    hostmem.trim()
  setup_peak = _process_peak_bytes()
  reset = _reset_peak()
  send(event='ready', setup_s=setup_s, warmup_losses=warmup_losses,
       warmup_s=warmup_s, peak_reset=reset,
       resident_bytes=_proc_status_bytes('VmRSS'), **info)
  for line in iter(sys.stdin.readline, ''):
    command = line.strip()
    if command == 'step':
      faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      start = time.perf_counter()
      loss = step()
      send(event='step', seconds=time.perf_counter() - start, loss=loss,
           page_faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    elif command == 'finish':
      steps_peak = (_vm_hwm_bytes() if reset else None) or _process_peak_bytes()
      send(event='done', steps_peak_bytes=steps_peak,
           process_peak_bytes=max(setup_peak, _process_peak_bytes()))
      return
    else:
      raise ValueError(f'Unknown command {command!r}')


# ----------------------------------------------------------------------------
# Driver.


class _Worker:
  """A worker subprocess of one (side, dtype)."""

  def __init__(self, side: str, dtype: str, hparams: dict[str, float]):
    self.side = side
    argv = [sys.executable, str(pathlib.Path(__file__).resolve()),
            f'--side={side}', f'--dtype={dtype}', f'--batch={_BATCH.value}',
            f'--length={_LENGTH.value}', f'--seed={_SEED.value}',
            f'--warmup={_WARMUP.value}', f'--scan_layers={_SCAN.value}',
            f'--target_fraction={_TARGET_FRACTION.value}',
            f'--torch_adamw={_TORCH_ADAMW.value}',
            f'--hparams={json.dumps(hparams)}']
    # Ours runs with the malloc tunables our jobs restart with (hostmem.py);
    # torch with glibc's defaults unless --torch_tunables.
    tuned = side == 'ours' or _TORCH_TUNABLES.value
    env = hostmem.environ() if tuned else hostmem.without()
    self.glibc_tunables = env.get('GLIBC_TUNABLES')
    logging.info('starting %s (GLIBC_TUNABLES=%s)', ' '.join(argv[1:]),
                 self.glibc_tunables)
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env,
                                 stdout=subprocess.PIPE, text=True, bufsize=1)
    self.ready = self._receive('ready')

  def _receive(self, event: str) -> dict[str, Any]:
    """The next protocol message, which must be `event`."""
    for line in self.proc.stdout:
      try:
        message = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(message, dict) and 'event' in message:
        if message['event'] != event:
          raise RuntimeError(f'{self.side}: expected {event!r}, got {message}')
        return message
    raise RuntimeError(f'{self.side} worker exited (code {self.proc.wait()}) '
                       f'before sending {event!r}; see its log above.')

  def step(self) -> dict[str, Any]:
    self.proc.stdin.write('step\n')
    self.proc.stdin.flush()
    return self._receive('step')

  def finish(self) -> dict[str, Any]:
    self.proc.stdin.write('finish\n')
    self.proc.stdin.flush()
    done = self._receive('done')
    self.proc.stdin.close()
    self.proc.wait()
    return done

  def kill(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()


def _run_steps(workers: list[_Worker], dtype: str) -> dict[str, list]:
  """`--steps` timed steps of each worker, alternating (and alternating which
  goes first) between the workers given."""
  timed = {w.side: [] for w in workers}
  for i in range(_STEPS.value):
    for w in workers[::1 if i % 2 == 0 else -1]:
      time.sleep(_PAUSE.value)
      timed[w.side].append(w.step())
      logging.info('%s step %d: %s %.2fs, loss %.5f', dtype, i, w.side,
                   timed[w.side][-1]['seconds'], timed[w.side][-1]['loss'])
  return timed


def _gib(n: int | None) -> float | None:
  return None if n is None else round(n / common.GIB, 3)


def _side_dtype(side: str, dtype: str) -> str:
  """The dtype a side's worker runs when ours runs `dtype`."""
  return _TORCH_BF16.value if side == 'torch' and dtype == 'bfloat16' else dtype


def _compare(dtype: str) -> dict[str, Any]:
  """Runs both sides at `dtype`; their speed, memory, MFU and losses."""
  b, t = _BATCH.value, _LENGTH.value
  hparams = _hparams(_config(dtype, b, t))
  logging.info('%s: AdamW %s', dtype, hparams)
  workers: dict[str, _Worker] = {}
  timed, done = {}, {}
  try:
    if _ALTERNATE.value:
      for side in ('ours', 'torch'):  # Set up one at a time.
        workers[side] = _Worker(side, _side_dtype(side, dtype), hparams)
      timed = _run_steps(list(workers.values()), dtype)
      for side, w in workers.items():
        done[side] = w.finish()
    else:
      for side in ('ours', 'torch'):
        workers[side] = _Worker(side, _side_dtype(side, dtype), hparams)
        timed.update(_run_steps([workers[side]], dtype))
        done[side] = workers[side].finish()
  finally:
    for w in workers.values():
      w.kill()

  ours, torch_ = workers['ours'].ready, workers['torch'].ready
  tunables = {side: w.glibc_tunables for side, w in workers.items()}
  if (ours['tokens_sum'], ours['mask_sum']) != (torch_['tokens_sum'],
                                                torch_['mask_sum']):
    logging.error('%s: the two sides trained on different tokens', dtype)
  losses = {side: workers[side].ready['warmup_losses'] +
                  [s['loss'] for s in timed[side]] for side in workers}
  seconds = {side: [s['seconds'] for s in timed[side]] for side in workers}
  tok_s = {side: b * t / statistics.median(seconds[side]) for side in workers}
  peak_gib = {side: done[side]['steps_peak_bytes'] / common.GIB for side in workers}
  process_gib = {side: done[side]['process_peak_bytes'] / common.GIB
                 for side in workers}
  loss_diff = abs(losses['ours'][0] - losses['torch'][0])
  logging.info('%s: first-step loss ours %.6f, torch %.6f (diff %.3g)', dtype,
               losses['ours'][0], losses['torch'][0], loss_diff)
  if dtype == 'float32' and loss_diff > _F32_LOSS_TOLERANCE.value:
    logging.error('float32 first-step losses differ by %.3g > %.3g', loss_diff,
                  _F32_LOSS_TOLERANCE.value)
  decreases = {}
  for side, values in losses.items():
    decreases[side] = values[-1] < values[0] if len(values) > 1 else None
    if decreases[side] is False:
      logging.error('%s %s: the loss did not decrease: %s', dtype, side, values)
  peak_flops = ours['peak_flops']
  mfu = {side: ours['flops_per_token'] * tok_s[side] / peak_flops
         for side in workers}
  result = {
      'ours_tok_s': round(tok_s['ours'], 1),
      'torch_tok_s': round(tok_s['torch'], 1),
      'ratio': round(tok_s['ours'] / tok_s['torch'], 3),
      'ours_peak_gib': round(peak_gib['ours'], 3),
      'torch_peak_gib': round(peak_gib['torch'], 3),
      'memory_ratio': round(peak_gib['ours'] / peak_gib['torch'], 3),
      'ours_mfu': round(mfu['ours'], 4),
      'torch_mfu': round(mfu['torch'], 4),
      'ours_loss': losses['ours'][0],
      'torch_loss': losses['torch'][0],
      'first_loss_diff': loss_diff,
      'ours_losses': [round(x, 5) for x in losses['ours']],
      'torch_losses': [round(x, 5) for x in losses['torch']],
      'ours_loss_decreases': decreases['ours'],
      'torch_loss_decreases': decreases['torch'],
      'ours_s': [round(s, 3) for s in seconds['ours']],
      'torch_s': [round(s, 3) for s in seconds['torch']],
      'ours_compile_s': round(ours['compile_s'], 1),
      'ours_target_slots': ours['slots'],
      'targets': ours['targets'],
      'ours_warmup_s': [round(s, 3) for s in ours['warmup_s']],
      'torch_warmup_s': [round(s, 3) for s in torch_['warmup_s']],
      'ours_resident_gib': _gib(ours['resident_bytes']),
      'torch_resident_gib': _gib(torch_['resident_bytes']),
      'ours_process_peak_gib': round(process_gib['ours'], 3),
      'torch_process_peak_gib': round(process_gib['torch'], 3),
      'process_memory_ratio': round(process_gib['ours'] / process_gib['torch'], 3),
      'peak_scope': ('timed steps' if ours['peak_reset'] and torch_['peak_reset']
                     else 'whole process'),
      'peak_flops': peak_flops,
      'flops_per_token': ours['flops_per_token'],
      'adamw': hparams,
      'torch_adamw': torch_['adamw'],
      'torch_attention': torch_['attention'],
      'torch_dtype': _side_dtype('torch', dtype),
      'torch_autocast': _side_dtype('torch', dtype) == 'bfloat16',
      'alternated': _ALTERNATE.value,
      'ours_page_faults': [s['page_faults'] for s in timed['ours']],
      'torch_page_faults': [s['page_faults'] for s in timed['torch']],
      'ours_glibc_tunables': tunables['ours'],
      'torch_glibc_tunables': tunables['torch'],
  }
  logging.info('%s: %s', dtype, json.dumps(result))
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _SIDE.value:
    _worker(_SIDE.value, _DTYPE.value)
    return
  if (_STEPS.value < 1 or _WARMUP.value < 0 or _LENGTH.value < 2
      or not 0 < _TARGET_FRACTION.value <= 1):
    raise app.UsageError('Need --steps >= 1, --warmup >= 0, --length >= 2, '
                         '0 < --target_fraction <= 1.')
  result = {'benchmark': 'train_step', 'batch': _BATCH.value,
            'length': _LENGTH.value, 'target_fraction': _TARGET_FRACTION.value,
            'scan_layers': _SCAN.value,
            'steps': _STEPS.value,
            'warmup': _WARMUP.value}
  for dtype in _DTYPES.value:
    result[dtype] = _compare(dtype)
  result['machine'] = common.machine()
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
