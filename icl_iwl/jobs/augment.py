"""Job 'augment': the passes of `config.augment` (see icl_iwl/augment/)."""

import pathlib
from typing import Any

import ml_collections

from icl_iwl.augment import generate
from icl_iwl.augment import runner
from icl_iwl.jobs import JOBS


@JOBS.register('augment')
def run(config: ml_collections.ConfigDict,
        workdir: pathlib.Path) -> dict[str, Any]:
  return runner.run(config, workdir, generate.load(config))
