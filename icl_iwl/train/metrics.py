"""The one way runs log: TensorBoard event files and a JSONL file.

    writer = MetricsWriter(workdir)      # process 0 writes, others no-op
    writer.write(step, {'train/loss': 2.3, 'eval/test_reversal/acc_sum': 0.5})

<workdir>/metrics.jsonl holds one {"step": ..., name: value} line per write;
<workdir>/tensorboard/ the event files (tensorboardX, no TensorFlow needed).
On resume, lines past the restored step are dropped (those steps rerun).
"""

import json
import pathlib
from typing import Mapping

import jax
import tensorboardX

from icl_iwl import paths


class MetricsWriter:
  """Scalars to TensorBoard and JSONL, from process 0 only."""

  def __init__(self, workdir: str | pathlib.Path, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.jsonl = pathlib.Path(workdir) / 'metrics.jsonl'
    if not self.enabled:
      return
    if self.jsonl.exists():
      kept = [line for line in self.jsonl.read_text().splitlines()
              if line and json.loads(line)['step'] <= resume_step]
      with paths.atomic_path(self.jsonl) as tmp:
        tmp.write_text(''.join(line + '\n' for line in kept))
    self._tb = tensorboardX.SummaryWriter(str(pathlib.Path(workdir) / 'tensorboard'),
                                          purge_step=resume_step + 1)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    for name, value in values.items():
      self._tb.add_scalar(name, value, step)
    with open(self.jsonl, 'a') as f:
      f.write(json.dumps({'step': step, **values}) + '\n')

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()


def read(workdir: str | pathlib.Path) -> list[dict]:
  """The JSONL log of a run, as dicts."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines() if line]
