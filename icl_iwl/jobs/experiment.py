"""Job 'experiment': several jobs (stages) in sub-workdirs, then one report.

`config.stages` maps a stage name to a whole job config (e.g. 'icl' an
eval_icl config, 'finetune' a train config), run in the order of
`config.order` (a ConfigDict sorts its keys; a stage it leaves out is not
run: `--config.order="('augment','aug_s0')"` runs two cells of a table, and
the report shows every stage that finished); each runs in <workdir>/<name>
with the same guarantees as a run of its own (resume, workdir guard), and a
stage that finished is skipped on rerun. Then `icl_iwl.report` collects the
stages into <workdir>/report.md and its plots, and the table is printed
with where the report, its plots and each stage's per-item scores are.
"""

import gc
import json
import pathlib
from typing import Sequence

import jax
import ml_collections

from icl_iwl import hostmem
from icl_iwl import paths
from icl_iwl import report
from icl_iwl import workdir as workdir_lib
from icl_iwl.jobs import JOBS


@JOBS.register('experiment')
def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, str]:
  """Runs the unfinished stages in order; returns where the report is."""
  for name in config.order:
    stage = config.stages[name]
    sub = workdir_lib.claim(workdir / name, stage)
    if (sub / report.DONE).exists():
      continue
    result = JOBS.get(stage.job)(stage, sub)
    with paths.atomic_path(sub / 'command.txt') as tmp:
      tmp.write_text(_stage_command(workdir, name))
    with paths.atomic_path(sub / report.DONE) as tmp:
      tmp.write_text(json.dumps(result, indent=2, default=str) + '\n')
    del result
    jax.clear_caches()  # This stage's compiled programs and the arrays they
    gc.collect()        # kept alive: memory stays flat from stage to stage.
    hostmem.trim()
  text = report.report(workdir, workdir / 'report', config.get('title', 'Experiment'))
  print(text)
  print(f'Report: {workdir / "report.md"}')
  print(f'Plots: {", ".join(str(p) for p in sorted(workdir.glob("report-*.png")))}')
  print(f'Per-item scores: {", ".join(_item_files(workdir, config.order))}')
  return {'report': str(workdir / 'report.md')}


def _item_files(workdir: pathlib.Path, stages: Sequence[str]) -> list[str]:
  """Where each stage's per-item JSONL files are: '<dir>/*.jsonl (n files)'
  (a training stage's are those of its last eval, under items/step<N>)."""
  out = []
  for name in stages:
    directory = report.last_items(workdir / name) or workdir / name
    files = [p for p in directory.glob('*.jsonl') if p.name != 'metrics.jsonl']
    if files:
      out.append(f'{directory}/*.jsonl ({len(files)} files)')
  return out


def _stage_command(workdir: pathlib.Path, name: str) -> str:
  """A stage's command.txt: the experiment's command, then '# stage <name>;'
  and the experiment's revision line (what the report prints per run)."""
  command, rest = report.read_command(workdir, f'(the experiment in {workdir})')
  return f'{command}\n# stage {name!r}' + (f'; {rest}\n' if rest else '\n')
