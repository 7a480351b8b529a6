"""The one way runs log: TensorBoard event files and a JSONL file.

    writer = MetricsWriter(workdir)      # process 0 writes, others no-op
    writer.write(step, {'train/loss': 2.3, 'eval/test_reversal/acc_sum': 0.5})

<workdir>/metrics.jsonl holds one {"step": ..., name: value} line per write;
<workdir>/tensorboard/ the event files (tensorboardX, no TensorFlow needed).
On resume, lines past the restored step are dropped (those steps rerun), and
so is a last line cut short by a killed run.
"""

import json
import pathlib
from typing import Mapping

from absl import logging
import jax

from icl_iwl import paths


class MetricsWriter:
  """Scalars to TensorBoard and JSONL, from process 0 only."""

  def __init__(self, workdir: str | pathlib.Path, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.jsonl = pathlib.Path(workdir) / 'metrics.jsonl'
    if not self.enabled:
      return
    if self.jsonl.exists():
      kept = [m for m in read(workdir) if m['step'] <= resume_step]
      with paths.atomic_path(self.jsonl) as tmp:
        tmp.write_text(''.join(json.dumps(m) + '\n' for m in kept))
    import tensorboardX  # pylint: disable=g-import-not-at-top  # Imports torch: ~3 s.
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
  """The JSONL log of a run, as dicts. A line cut short by a killed writer
  (or otherwise unreadable) is skipped with a warning."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  out = []
  for lineno, line in enumerate(path.read_text().splitlines(), start=1):
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      if line.strip():
        logging.warning('%s:%d: skipping an unreadable line %r', path, lineno,
                        line[:80])
  return [m for m in out if isinstance(m, dict) and 'step' in m]
