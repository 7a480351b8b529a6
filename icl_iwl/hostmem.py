"""Host memory: keep what XLA:CPU frees mapped, so the next step reuses it.

XLA:CPU allocates an executable's temporary buffer (4.8 GiB for a training
step of the 270M at 8 x 256) with posix_memalign on a worker thread at
every call, and frees it when the call ends. glibc serves an allocation that
large on a thread's arena with a fresh mmap and returns it with munmap
(whatever `mmap_max` says), so every step touches all its temporaries for the
first time: ~1.45M page faults and ~4-5 s of kernel time in a 13.6 s step on
a 2-core CPU (docs/benchmarks.md, train_step). With every allocation on the
main arena (`arena_max=1`), none mmapped (`mmap_max=0`) and the heap's top
never given back (`trim_threshold` 64 GiB), the pages stay mapped from one
call to the next: no faults, a 10.0 s step (its peak resident set 9.77 GiB
against 9.86). The cost: a process keeps what it freed, and a job that
alternates programs with large temporaries of their own (training steps,
probe scoring, the stages of an experiment) lets them fragment the heap, so
that its resident set grows towards their sum (22.0 GB for three augmented
fine-tuning stages of reversal_curse in one process, against 16.7-18.5 GB
with glibc's defaults). `trim()` gives the heap's free pages back to the
system; the training loop calls it after setup (the pretrained load or
a checkpoint's restore, the evaluator's), after its first step
(compilation), around each evaluation and after each checkpoint save, once
it is written (saves are synchronous then: an asynchronous save's host copy
of the state would sit beside the next steps' temporaries and stay mapped;
docs/benchmarks.md), experiments between stages (benchmarks/train_step.py's
worker after its warm-up), so only the step after one pays its page faults
again (the same experiment's next three stages, split instead of global,
peaked at 17.7 GB).

glibc reads these settings (GLIBC_TUNABLES) only when a process starts, so
`restart_with_tunables` starts the command again with them, once, before the
entry point imports anything heavy (jax, the model); the process keeps its
pid. `python -m icl_iwl.main` does this on a Linux host with glibc and no
accelerator (a TPU or GPU host's steps do not run on XLA:CPU);
benchmarks/train_step.py starts our worker with them. ICL_IWL_MALLOC set to
any value (e.g. 'system') keeps glibc's defaults. A notebook kernel cannot
restart itself: start it with GLIBC_TUNABLES=`TUNABLES` for the same effect.
"""

import ctypes
import glob
import os
import platform
import sys

TUNABLES = ('glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:'
            'glibc.malloc.trim_threshold=68719476736')
ENV = 'ICL_IWL_MALLOC'
# Device files of TPU (accel, vfio) and NVIDIA GPU hosts.
_ACCELERATORS = ('/dev/accel*', '/dev/vfio/[0-9]*', '/dev/nvidia[0-9]*')


def environ(env: dict[str, str] | None = None) -> dict[str, str]:
  """`env` (default os.environ) with `TUNABLES` added to GLIBC_TUNABLES."""
  env = dict(os.environ if env is None else env)
  if TUNABLES not in env.get('GLIBC_TUNABLES', ''):
    env['GLIBC_TUNABLES'] = ':'.join(
        t for t in (env.get('GLIBC_TUNABLES', ''), TUNABLES) if t)
  return env


def without(env: dict[str, str] | None = None) -> dict[str, str]:
  """`env` (default os.environ) with glibc's defaults: no GLIBC_TUNABLES,
  ICL_IWL_MALLOC=system."""
  env = {k: v for k, v in (os.environ if env is None else env).items()
         if k != 'GLIBC_TUNABLES'}
  return dict(env, **{ENV: 'system'})


def active() -> bool:
  """Whether this process started with `TUNABLES`."""
  return TUNABLES in os.environ.get('GLIBC_TUNABLES', '')


def _cpu_host() -> bool:
  """Whether jobs here run on XLA:CPU: JAX_PLATFORMS allows cpu and the
  host has no TPU or GPU device file."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms and 'cpu' not in platforms.split(','):
    return False
  return not any(glob.glob(pattern) for pattern in _ACCELERATORS)


def restart_with_tunables() -> None:
  """Replaces this process by the same command with `TUNABLES` (see the
  module doc), unless it has them, ICL_IWL_MALLOC is set (the restart sets
  it to 'restarted', so it happens once), the C library is not glibc or the
  host has an accelerator. If the restart fails, the process goes on as is."""
  if (active() or ENV in os.environ or platform.libc_ver()[0] != 'glibc'
      or not _cpu_host()):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              dict(environ(), **{ENV: 'restarted'}))
  except OSError as e:
    print(f'icl_iwl: not restarted with {TUNABLES} ({e}); going on.',
          file=sys.stderr)


def trim() -> None:
  """Gives the heap's free pages back to the system (glibc's malloc_trim),
  when this process runs with `TUNABLES` on glibc: between phases whose
  temporaries differ, so that they do not add up (see the module doc)."""
  if active() and platform.libc_ver()[0] == 'glibc':
    malloc_trim = ctypes.CDLL(None).malloc_trim
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    malloc_trim(0)
