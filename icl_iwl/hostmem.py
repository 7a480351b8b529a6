"""Host memory: keep what XLA:CPU frees mapped, so the next step reuses it.

XLA:CPU allocates an executable's temporary buffer (4.8 GiB for a training
step of the 270M at 8 x 256) with posix_memalign on a worker thread at
every call, and frees it when the call ends. glibc serves an allocation that
large on a thread's arena with a fresh mmap and returns it with munmap
(whatever `mmap_max` says), so every step touches all its temporaries for the
first time: ~1.45M page faults and ~4-5 s of kernel time in a 13.6 s step on
a 2-core CPU (docs/benchmarks.md). With every allocation on the main arena
(`arena_max=1`), none mmapped (`mmap_max=0`) and the heap's top never given
back (`trim_threshold` 64 GiB), the pages stay mapped from one call to the
next: no faults, a 10.0 s step, the same peak resident memory.

glibc reads these settings (GLIBC_TUNABLES) only when a process starts, so
`restart_with_tunables` starts the command again with them, once, before
anything is loaded; the process keeps its pid. Jobs (`python -m
icl_iwl.main`) and the benchmarks do this on Linux with glibc;
ICL_IWL_MALLOC=system keeps glibc's defaults. A notebook kernel cannot restart
itself: start it with GLIBC_TUNABLES set to `TUNABLES` for the same effect.
"""

import os
import platform
import sys

TUNABLES = ('glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:'
            'glibc.malloc.trim_threshold=68719476736')
ENV = 'ICL_IWL_MALLOC'


def environ(env: dict[str, str] | None = None) -> dict[str, str]:
  """`env` (default os.environ) with `TUNABLES` added to GLIBC_TUNABLES."""
  env = dict(os.environ if env is None else env)
  if TUNABLES not in env.get('GLIBC_TUNABLES', ''):
    env['GLIBC_TUNABLES'] = ':'.join(
        t for t in (env.get('GLIBC_TUNABLES', ''), TUNABLES) if t)
  return env


def active() -> bool:
  """Whether this process started with `TUNABLES`."""
  return TUNABLES in os.environ.get('GLIBC_TUNABLES', '')


def restart_with_tunables() -> None:
  """Replaces this process by the same command with `TUNABLES` (see the
  module doc), unless it has them, is not glibc's, or ICL_IWL_MALLOC is set
  ('system'; 'restarted' by the restart itself, so it happens once)."""
  if active() or ENV in os.environ or platform.libc_ver()[0] != 'glibc':
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
            dict(environ(), **{ENV: 'restarted'}))
