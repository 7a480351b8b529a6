"""Quickstart: the embedded Gemma 3 270M scores 12 built-in questions.

    python -m icl_iwl.main --config=configs/quickstart.py --workdir=/tmp/icl_quickstart

Prints a table with the accuracy (chance is about 0.26). `arg` 'tiny' uses a
random two-layer model instead (for tests; accuracy near chance).
"""

from icl_iwl import config_lib


def get_config(arg: str | None = None):
  c = config_lib.base('score')
  c.probes = 'quickstart'  # Or 'dataset[:split],...', e.g. 'reversals'.
  c.data_config = 'full'
  c.limit = 0  # Most items per probe set (0: all).
  c.scorer = config_lib.scorer()
  if arg == 'tiny':
    c.model = config_lib.model(preset='tiny', checkpoint='random')
  elif arg:
    raise ValueError(f"configs/quickstart.py takes no arg or 'tiny', not {arg!r}.")
  return c
