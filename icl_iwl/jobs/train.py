"""Job 'train': fine-tune (full or LoRA) with eval hooks; see train/loop.py."""

import pathlib

import ml_collections

from icl_iwl.jobs import JOBS
from icl_iwl.train import loop


@JOBS.register('train')
def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, float]:
  return loop.train(config, workdir)
