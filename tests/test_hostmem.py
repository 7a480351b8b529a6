"""Jobs restart once with glibc malloc tunables that keep freed memory mapped."""

import json
import os
import pathlib
import platform
import subprocess
import sys
import textwrap

import pytest

from icl_iwl import hostmem

glibc = pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc only')

# A jitted call with a [8192, 8192] f32 temporary (256 MiB): the minor page
# faults of calls 5-12 (XLA:CPU allocates its temporaries anew at each call),
# then of one call after a trim.
_FAULTS = textwrap.dedent('''
    import json, os, resource, sys
    from icl_iwl import hostmem
    hostmem.restart_with_tunables()
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x, w: jnp.tanh(x @ w).sum(0) @ w.T)
    x, w = jnp.ones((8192, 16)), jnp.full((16, 8192), 1e-3)
    for _ in range(4):
      f(x, w).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
      f(x, w).block_until_ready()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    hostmem.trim()  # The pages go back: the next call faults them in again.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
    print(json.dumps({'faults': faults,
                      'after_trim': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                      'tunables': os.environ.get('GLIBC_TUNABLES'),
                      'restarts': os.environ.get(hostmem.ENV), 'argv': sys.argv[1:]}))
''')
_THP = pathlib.Path('/sys/kernel/mm/transparent_hugepage/enabled')


def _run(env: dict[str, str]) -> dict:
  out = subprocess.run([sys.executable, '-c', _FAULTS, 'an', 'arg'], env=env,
                       capture_output=True, text=True, check=True, timeout=300)
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 1, out.stdout  # One process printed, once.
  return json.loads(lines[0])


def test_environ_adds_the_tunables_to_those_already_set():
  assert hostmem.environ({})['GLIBC_TUNABLES'] == hostmem.TUNABLES
  env = hostmem.environ({'GLIBC_TUNABLES': 'glibc.cpu.x86_ibt=on', 'A': '1'})
  assert env == {'GLIBC_TUNABLES': f'glibc.cpu.x86_ibt=on:{hostmem.TUNABLES}',
                 'A': '1'}
  assert hostmem.environ(env) == env
  assert hostmem.without(env) == {'A': '1', hostmem.ENV: 'system'}


@pytest.mark.parametrize('platforms, devices, restarts', [
    ('', [], True), ('cpu', [], True), ('tpu,cpu', [], True),
    ('tpu', [], False), ('', ['/dev/accel0'], False)])
def test_only_cpu_hosts_restart(monkeypatch, platforms, devices, restarts):
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  monkeypatch.delenv(hostmem.ENV, raising=False)
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  monkeypatch.setattr(hostmem.glob, 'glob', lambda p: devices if 'accel' in p else [])
  monkeypatch.setattr(hostmem.platform, 'libc_ver', lambda: ('glibc', '2.36'))
  calls = []
  monkeypatch.setattr(hostmem.os, 'execve', lambda *args: calls.append(args))
  hostmem.restart_with_tunables()
  assert bool(calls) == restarts
  if restarts:
    (path, argv, env), = calls
    assert argv[0] == path and env['GLIBC_TUNABLES'].endswith(hostmem.TUNABLES)
    assert env[hostmem.ENV] == 'restarted'


@glibc
@pytest.mark.e2e  # Two subprocesses.
@pytest.mark.skipif(_THP.exists() and '[always]' in _THP.read_text(),
                    reason='huge pages fault 512 times less either way')
def test_a_restarted_process_keeps_its_temporaries_mapped():
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', hostmem.ENV)}
  env['JAX_PLATFORMS'] = 'cpu'
  tuned = _run(env)
  assert tuned['tunables'] == hostmem.TUNABLES
  assert tuned['restarts'] == 'restarted' and tuned['argv'] == ['an', 'arg']
  plain = _run(dict(env, **{hostmem.ENV: 'system'}))
  assert plain['tunables'] is None
  # 256 MiB of 4 KiB pages first touched again at each call (65.5k faults a
  # call measured); once freed memory stays mapped, next to none (0-140 a call).
  assert plain['faults'] > 400_000, plain
  assert tuned['faults'] < plain['faults'] / 20, (tuned, plain)
  assert tuned['after_trim'] > 50_000, tuned
