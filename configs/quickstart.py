"""Quickstart: the embedded Gemma 3 270M scores 12 built-in questions.

    python -m icl_iwl.main --config=configs/quickstart.py --workdir=/tmp/icl_quickstart

Prints a table with the accuracy (chance is about 0.26). `arg` 'tiny' uses a
random two-layer model instead (for tests; accuracy near chance).
"""

from icl_iwl import config_lib


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base('score')
  # 'quickstart' (the built-in questions) or a dataset, e.g.
  # --config.eval.dataset=reversals --config.eval.splits=test_forward
  c.eval = config_lib.evaluation('quickstart')
  c.scorer = config_lib.scorer()
  if a.tiny:
    c.model = config_lib.model(preset='tiny', checkpoint='random')
  return c
