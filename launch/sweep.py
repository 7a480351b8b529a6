r"""Runs a config's sweep: one `icl_iwl.main` run per set of config overrides.

    python -m launch.sweep --config=configs/finetune.py:reversals \
        --root=/tmp/sweeps/reversals [--dry_run] [--tpu=NAME]

The config file defines `get_sweep(arg)` beside `get_config(arg)`: a list of
dicts of overrides, dotted config keys to values, e.g.
`[{'train.learning_rate': 1e-3, 'model.lora.rank': 16}, ...]`. Every key and
value is checked against `get_config(arg)` before anything runs. Each run's
workdir is <root>/<name>, the name made from its sorted overrides, e.g.
`model.lora.rank=16,train.learning_rate=0.001`; a run whose workdir holds
done.json (written by icl_iwl.main when a job returns) is skipped, so
rerunning a sweep finishes it (a preempted run, exit status 75, resumes from
its checkpoint; the sweep stops there and exits 75 too). Runs go one after
the other, their output streamed; <root>/sweep.json indexes them (name ->
overrides, workdir, status).

--dry_run prints the commands instead. --tpu=NAME prints, for every run, a
shell line to run from the repository root: `launch/tpu_vm.sh run NAME --fg
-- ...` unless the run's done.json exists on worker 0, each line waiting for
the previous one (e.g. `python -m launch.sweep ... --tpu=NAME | bash`);
--root is then a directory on the TPU VM workers.
"""

import collections
import dataclasses
import hashlib
import json
import pathlib
import re
import shlex
import signal
import subprocess
import sys
from typing import Any

from absl import app
from absl import flags
import ml_collections

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl import paths

# icl_iwl.main.DONE and EXIT_PREEMPTED; importing icl_iwl.main would define its
# flags beside ours.
DONE = 'done.json'
EXIT_PREEMPTED = 75
INDEX = 'sweep.json'
REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_VM = 'launch/tpu_vm.sh'  # Relative to REPO.
_MAX_NAME = 200  # Characters; file names may have 255 bytes.

FLAGS = flags.FLAGS

Overrides = dict[str, Any]


class SweepError(errors.UserError):
  """A sweep definition that cannot run, explained."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep."""
  name: str
  overrides: Overrides
  workdir: pathlib.Path


def load(config: str) -> tuple[ml_collections.ConfigDict, list[Overrides]]:
  """(get_config(arg), get_sweep(arg)) of the config file 'path[:arg]'."""
  file, _, arg = config.partition(':')
  if not pathlib.Path(file).is_file():
    raise SweepError(f'No config file {file!r}.')
  module = config_lib.load_module(file)
  if not hasattr(module, 'get_sweep'):
    raise SweepError(f'{file} defines no get_sweep(arg).')
  return module.get_config(arg or None), module.get_sweep(arg or None)


def flag_args(overrides: Overrides) -> list[str]:
  """['--config.a.b=value', ...], sorted by key."""
  return [f'--config.{key}={value}' for key, value in sorted(overrides.items())]


def run_name(overrides: Overrides) -> str:
  """A stable, readable, filesystem-safe name, e.g. 'a.b=1,c=0.001'."""
  if not overrides:
    return 'default'
  name = ','.join(f'{key}={re.sub(r"[^A-Za-z0-9._+-]+", "_", str(value)).strip("_")}'
                  for key, value in sorted(overrides.items()))
  if len(name) > _MAX_NAME:
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    name = f'{name[:_MAX_NAME - 13]}-{digest}'
  return name


def check(config: ml_collections.ConfigDict, sweep: list[Overrides]) -> None:
  """Raises SweepError unless every run's overrides apply to `config`."""
  if not isinstance(sweep, list) or not sweep:
    raise SweepError(f'get_sweep must return a non-empty list of dicts, not {sweep!r}.')
  names = {}
  for i, overrides in enumerate(sweep):
    if not isinstance(overrides, dict):
      raise SweepError(f'Run {i} of the sweep is {overrides!r}, not a dict of overrides.')
    message = config_lib.bad_override(config, flag_args(overrides))
    if message:
      raise SweepError(f'Run {i} of the sweep {overrides}: {message}')
    try:
      run_config = config.copy_and_resolve_references()
      run_config.update_from_flattened_dict(overrides)
      config_lib.validate(run_config)
    except (TypeError, ValueError, KeyError) as e:
      raise SweepError(f'Run {i} of the sweep {overrides}: {e}') from e
    name = run_name(overrides)
    if name in names:
      raise SweepError(f'Runs {names[name]} and {i} of the sweep have the same name '
                       f'{name!r}: {sweep[names[name]]} and {overrides}.')
    names[name] = i


def plan(sweep: list[Overrides], root: str | pathlib.Path) -> list[Run]:
  """The runs of a checked sweep, in its order, each with its workdir."""
  return [Run(run_name(o), o, pathlib.Path(root) / run_name(o)) for o in sweep]


def main_args(config: str, run: Run) -> list[str]:
  """The arguments of `python -m icl_iwl.main` for `run`."""
  return [f'--config={config}', f'--workdir={run.workdir}', *flag_args(run.overrides)]


def local_command(config: str, run: Run) -> list[str]:
  """`python -m icl_iwl.main ...` of `run`, with this interpreter."""
  return [sys.executable, '-m', 'icl_iwl.main', *main_args(config, run)]


def tpu_line(config: str, run: Run, tpu: str) -> str:
  """A shell line: `run` on the TPU VM slice `tpu` unless done there (worker 0).

  The config path is made relative to the repository, where `tpu_vm.sh setup`
  puts it on the workers.
  """
  file, colon, arg = config.partition(':')
  try:
    file = str(pathlib.Path(file).resolve().relative_to(REPO))
  except ValueError:
    raise SweepError(f'--tpu needs a config file inside {REPO} (tpu_vm.sh setup '
                     f'copies that to the workers), not {file}.') from None
  done = [TPU_VM, 'ssh', tpu, '--worker=0', '--',
          f'test -e {shlex.quote(str(run.workdir / DONE))}']
  job = [TPU_VM, 'run', tpu, '--fg', '--', *main_args(file + colon + arg, run)]
  return f'{shlex.join(done)} || {shlex.join(job)}'


def _write_index(root: pathlib.Path, config: str, runs: dict[str, dict]) -> None:
  with paths.atomic_path(root / INDEX) as tmp:
    tmp.write_text(json.dumps({'config': config, 'runs': runs}, indent=2, default=str) + '\n')


def _run_child(command: list[str]) -> int:
  """Runs a command; a SIGTERM to the sweep is passed on to it (preemption),
  so it checkpoints and exits 75 before the sweep records it."""
  child = subprocess.Popen(command)
  previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
  try:
    return child.wait()
  finally:
    signal.signal(signal.SIGTERM, previous)


def execute(config: str, runs: list[Run], root: str | pathlib.Path,
            stop_on_failure: bool = False) -> dict[str, dict]:
  """Runs the unfinished runs in turn; returns (and writes) the index."""
  root = pathlib.Path(root)
  index = {r.name: dict(overrides=r.overrides, workdir=str(r.workdir), status='pending')
           for r in runs}
  for run in runs:
    entry = index[run.name]
    if (run.workdir / DONE).exists():
      entry['status'] = 'done'
      print(f'Skipping {run.name}: {run.workdir / DONE} exists.', flush=True)
      continue
    entry['status'] = 'running'
    _write_index(root, config, index)
    command = local_command(config, run)
    print(f'Running {run.name}:\n  {shlex.join(command)}', flush=True)
    try:
      code = _run_child(command)
    except KeyboardInterrupt:
      entry['status'] = 'interrupted'
      _write_index(root, config, index)
      raise
    if code == 0 and (run.workdir / DONE).exists():
      entry['status'] = 'done'
    elif code == EXIT_PREEMPTED:
      entry.update(status='preempted', exit_code=code)
      print(f'PREEMPTED {run.name}: rerun the sweep to resume it.', file=sys.stderr,
            flush=True)
    else:
      entry.update(status='failed', exit_code=code)
      print(f'FAILED {run.name} (exit code {code}).', file=sys.stderr, flush=True)
    _write_index(root, config, index)
    if entry['status'] == 'preempted':
      break  # The machine is going away: leave the rest for the rerun.
    if entry['status'] == 'failed' and stop_on_failure:
      break
  _write_index(root, config, index)
  return index


def _define_flags() -> None:
  """Defines the flags, only when this module is the program.

  So tests can import it beside other modules that define --config.
  """
  flags.DEFINE_string('config', None,
                      'Config file path[:arg] defining get_config(arg) and get_sweep(arg).')
  flags.DEFINE_string('root', None, "Directory of the runs' workdirs and sweep.json.")
  flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
  flags.DEFINE_string('tpu', None, 'Print the launch/tpu_vm.sh commands that run the '
                      'sweep on this TPU VM slice (--root is then on its workers), '
                      'instead of running it here.')
  flags.DEFINE_bool('stop_on_failure', False, 'Stop at the first failed run (default: go on).')
  flags.mark_flags_as_required(['config', 'root'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  base, sweep = load(FLAGS.config)
  check(base, sweep)
  runs = plan(sweep, FLAGS.root)
  if FLAGS.tpu:
    for run in runs:
      print(tpu_line(FLAGS.config, run, FLAGS.tpu))
    return
  if FLAGS.dry_run:
    for run in runs:
      done = (run.workdir / DONE).exists()
      print(('# done: ' if done else '') + shlex.join(local_command(FLAGS.config, run)))
    return
  index = execute(FLAGS.config, runs, FLAGS.root, FLAGS.stop_on_failure)
  counts = collections.Counter(entry['status'] for entry in index.values())
  print(f'Sweep of {len(index)} runs: {dict(counts)}; index in '
        f'{pathlib.Path(FLAGS.root) / INDEX}')
  if counts['preempted']:
    sys.exit(EXIT_PREEMPTED)
  if counts['done'] < len(index):
    sys.exit(1)


if __name__ == '__main__':
  _define_flags()
  app.run(errors.main_wrapper(main))
