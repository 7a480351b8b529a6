"""Runs an icl_iwl job (`config.job`) from an experiment config.

    python -m icl_iwl.main --config=configs/quickstart.py --workdir=/tmp/icl_quickstart
    python -m icl_iwl.main --config=configs/finetune.py:reversals \
        --workdir=/tmp/ft --config.train.steps=100

Override any field with --config.a.b=value. Every check runs before a model
loads: a misspelt key or arg word, a bad value, a mesh that does not divide
the devices stop the run with one line saying what is wrong (--verbosity=1
adds the traceback). On several hosts (a TPU pod slice) pass --multihost (TPU:
all else is detected) or, elsewhere, --coordinator, --num_processes,
--process_id.

Exit status: 0 when the job finished (<workdir>/done.json is written then),
75 when it was preempted (SIGTERM: a checkpoint is saved, rerun to resume),
2 for a mistake in the input, 1 for a bug or a failure.
"""

import sys

if __name__ == '__main__':  # Before jax loads: see hostmem.py.
  from icl_iwl import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.restart_with_tunables()

# pylint: disable=g-import-not-at-top,wrong-import-position
import json  # noqa: E402
import logging as std_logging  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from icl_iwl import config_lib  # noqa: E402
from icl_iwl import errors  # noqa: E402
from icl_iwl import jobs  # noqa: E402
from icl_iwl import paths  # noqa: E402
from icl_iwl import runtime  # noqa: E402
from icl_iwl import workdir as workdir_lib  # noqa: E402
from icl_iwl.train import loop  # noqa: E402

DONE = 'done.json'  # Written to the workdir when the job returns.
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped early, rerun to resume.

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, path[:arg].', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Outputs, logs and checkpoints; rerunning resumes.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Call jax.distributed.initialize() (auto-detects TPU pods).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'host:port of process 0, for multi-process runs off TPU.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0-based.')
_ALLOW_CHANGED = flags.DEFINE_bool(
    'allow_changed_config', False,
    'Run in a workdir whose config.json describes another run (another model, '
    'LoRA, dataset, sampler, batch shape...): resumes its checkpoints with the '
    'new config; the old config.json is kept as config.<time>.json.')
flags.mark_flags_as_required(['config', 'workdir'])


_QUIET = tuple(f'{os.sep}{name}{os.sep}' for name in ('orbax', 'tensorflow_datasets'))


def _quiet_libraries(record: std_logging.LogRecord) -> bool:
  """Drops the INFO lines orbax and TFDS log through absl (a dozen per
  checkpoint, some thousands of characters long; one per dataset opened);
  --verbosity=1 keeps them."""
  return (record.levelno >= std_logging.WARNING or logging.get_verbosity() > 0
          or not any(name in record.pathname for name in _QUIET))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_logger().addFilter(_quiet_libraries)
  if _COORDINATOR.value:
    # Cross-process collectives on CPU (TPUs and GPUs have their own).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  elif _MULTIHOST.value:
    jax.distributed.initialize()
  config = _CONFIG.value
  runtime.validate(config)
  workdir = workdir_lib.claim(_WORKDIR.value, config, _ALLOW_CHANGED.value,
                              write=jax.process_index() == 0)
  if jax.process_index() == 0:  # How to rerun this (icl_iwl.report lists it).
    with paths.atomic_path(workdir / 'command.txt') as tmp:
      tmp.write_text(f'python -m icl_iwl.main {shlex.join(sys.argv[1:])}\n'
                     f'# revision {paths.revision()}\n')
  logging.info('Job %r on %d devices (%d processes); workdir %s', config.job,
               jax.device_count(), jax.process_count(), workdir)
  try:
    result = jobs.JOBS.get(config.job)(config, workdir)
  except loop.Preempted as e:
    logging.warning('%s', e)
    print(e, file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  if jax.process_index() == 0:  # Sweeps skip runs that finished.
    with paths.atomic_path(workdir / DONE) as tmp:
      tmp.write_text(json.dumps(result, indent=2, default=str) + '\n')


if __name__ == '__main__':
  app.run(errors.main_wrapper(main), flags_parser=config_lib.parse_flags)
