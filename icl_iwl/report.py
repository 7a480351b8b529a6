r"""Collects finished runs into tables and plots: accuracy per probe split and
method, mean and spread over seeds, beside chance and the prior-only baseline.

    python -m icl_iwl.report --root=/tmp/runs [--out=docs/results] [--title=...]

Every workdir under --root with a done.json is a finished run (icl_iwl.main
writes it). What a run contributes, by its job:
  eval_icl  'no context' (the model's prior) and 'ICL (<protocol>)' per split;
  train     the last eval of its probes ('FT' or 'FT (LoRA r)'); an IC-Train
            run (eval.grades) its IWL / ICL / copy scores as rows
            '<score> <domain> <grade>' (eval/ictrain.py);
  score     its accuracy per split.
A run's method is `config.label` if the config sets one, else named from the
config as above; the model's own name is added when it is not the pretrained
default. Runs that differ only in their seeds are replicates: the table shows
their mean, the spread (min-max) and how many seeds. The 'prior' column is the
pretrained model with nothing in context, the baseline every method must beat;
'chance' is guessing uniformly among each probe's choices.

Writes <out>.md (one table per dataset, the command and git revision of every
run, the revision of the report) and <out>-<dataset>.png (accuracy by method
per split) and <out>-<dataset>-steps.png (probe accuracy over training steps)
where training runs exist; for IC-Train runs <out>-<dataset>-<score>.png
(each score over training steps by grade and domain, mean and min-max over
seeds per method).
"""

import collections
import dataclasses
import json
import pathlib
import shlex
import statistics
from typing import Any, Iterator, Sequence

from absl import app
from absl import flags

from icl_iwl import errors
from icl_iwl import paths
from icl_iwl import tables
from icl_iwl.eval import ictrain

DONE = 'done.json'
PRIOR = 'prior'  # The method of a pretrained model's no-context scores.


@dataclasses.dataclass(frozen=True)
class Score:
  """One run's accuracy on one probe split."""

  dataset: str
  split: str
  method: str
  accuracy: float
  chance: float | None
  seed: tuple[int, ...]
  workdir: str
  probes: int | None = None  # How many probes the accuracy is over.


def _read_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None


def _flag(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
  node = config
  for key in keys:
    if not isinstance(node, dict) or key not in node:
      return default
    node = node[key]
  return node


def _dataset_label(name: str, config: str) -> str:
  return name if name.startswith('jsonl/') else f'{name}/{config}'


def _eval_dataset(config: dict[str, Any]) -> str:
  ev = config.get('eval', {})
  if ev.get('dataset'):
    return _dataset_label(ev['dataset'], ev.get('config', 'full'))
  data = config.get('data', {})
  return _dataset_label(data.get('dataset', '?'), data.get('config', 'full'))


def _model_name(config: dict[str, Any]) -> str:
  """'' for the pretrained default, else what the model is."""
  checkpoint = _flag(config, 'model', 'checkpoint', default='embedded')
  if checkpoint == 'embedded':
    return ''
  if checkpoint.startswith('run:'):
    return f'trained ({pathlib.Path(checkpoint[4:].split("@")[0]).name})'
  return checkpoint


def _train_method(config: dict[str, Any]) -> str:
  rank = _flag(config, 'model', 'lora', 'rank', default=0)
  return f'FT (LoRA {rank})' if rank else 'FT'


def _seed(config: dict[str, Any]) -> tuple[int, ...]:
  return (config.get('seed', 0), _flag(config, 'data', 'seed', default=0),
          _flag(config, 'icl', 'seed', default=0))


def scores(workdir: pathlib.Path) -> list[Score]:
  """The scores one finished run contributes (see the module doc)."""
  config = _read_json(workdir / 'config.json')
  if config is None or not (workdir / DONE).exists():
    return []
  job, label, model = config.get('job'), config.get('label', ''), _model_name(config)
  dataset, seed, out = _eval_dataset(config), _seed(config), []

  def add(split, method, accuracy, chance=None, probes=None):
    out.append(Score(dataset, split, method, float(accuracy), chance, seed,
                     str(workdir), probes))

  if job == 'eval_icl':
    summary = _read_json(workdir / 'summary.json') or {}
    for row in summary.get('splits', []):
      base = label or (f'{model}, no context' if model else PRIOR)
      add(row['split'], base, row['baseline'], row.get('chance'), row.get('n'))
      icl = f'ICL ({row.get("protocol", "?")})'
      add(row['split'], f'{label or model}: {icl}' if (label or model) else icl,
          row['icl'], row.get('chance'), row.get('n'))
  elif job == 'train':
    last: dict[str, float] = {}
    last_step: dict[str, int] = {}
    for m in _metrics(workdir):
      last.update({k: v for k, v in m.items() if k.endswith('/acc_sum')
                   or k.startswith('probe/')})
      last_step.update({k: m.get('step') for k in m if k.endswith('/acc_sum')})
    for key, value in sorted(last.items()):
      if key.endswith('/acc_sum'):
        split = key.split('/')[1]  # Its per-item scores, one line a probe:
        items = workdir / 'items' / f'step{last_step[key]}' / f'{split}.jsonl'
        probes = chance = None
        if items.is_file():
          choices = [len(json.loads(line).get('logprob', ()))
                     for line in items.read_text().splitlines()]
          probes = len(choices)
          if choices and all(choices):
            chance = statistics.fmean(1 / c for c in choices)
        add(split, label or _train_method(config), value, chance, probes)
      elif (cell := ictrain.parse_key(key)) is not None:
        n = last.get(f'{key}/n')
        add(' '.join(cell), label or _train_method(config), value,
            last.get(f'{key}/chance'), None if n is None else int(n))
  elif job == 'score':
    for row in _read_json(workdir / 'summary.json') or []:
      split = row['probes'].rsplit('/', 1)[-1]
      add(split, label or model or PRIOR, row['acc_sum'], row.get('chance'))
  return out


def last_items(workdir: pathlib.Path) -> pathlib.Path | None:
  """A trained run's per-item scores of its last eval (items/step<N>), or None."""
  steps = sorted((workdir / 'items').glob('step*'), key=lambda p: int(p.name[4:]))
  return steps[-1] if steps else None


def read_command(workdir: pathlib.Path, missing: str = '?') -> tuple[str, str]:
  """(command, note) of a run's command.txt: its first line, and the rest
  joined without the leading '# ' (the revision); (`missing`, '') if none."""
  path = workdir / 'command.txt'
  lines = path.read_text().splitlines() if path.exists() else []
  return (lines[0] if lines else missing), ' '.join(lines[1:]).lstrip('# ')


def _metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The lines of a run's metrics.jsonl that parse (a cut last line does not)."""
  out = []
  for line in (workdir / 'metrics.jsonl').read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return out


def runs(root: pathlib.Path) -> Iterator[pathlib.Path]:
  """Workdirs under `root` (itself included) that hold a finished run."""
  for done in sorted(pathlib.Path(root).rglob(DONE)):
    yield done.parent


@dataclasses.dataclass(frozen=True)
class Cell:
  mean: float
  low: float
  high: float
  n: int

  def __str__(self) -> str:
    if self.n == 1:
      return f'{self.mean:.3f}'
    return f'{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] n={self.n}'


def aggregate(all_scores: Sequence[Score]
              ) -> dict[str, dict[str, dict[str, Cell]]]:
  """{dataset: {split: {method: Cell over seeds}}}."""
  grouped = collections.defaultdict(list)
  for s in all_scores:
    grouped[(s.dataset, s.split, s.method)].append(s.accuracy)
  out: dict = collections.defaultdict(lambda: collections.defaultdict(dict))
  for (dataset, split, method), values in sorted(grouped.items()):
    out[dataset][split][method] = Cell(statistics.fmean(values), min(values),
                                       max(values), len(values))
  return out


def chances(all_scores: Sequence[Score]) -> dict[tuple[str, str], float]:
  """(dataset, split) -> chance, from the runs that report it."""
  return {(s.dataset, s.split): s.chance for s in all_scores if s.chance is not None}


def probe_counts(all_scores: Sequence[Score]) -> dict[tuple[str, str], str]:
  """(dataset, split) -> how many probes its accuracies are over ('36', or
  '36/40' when runs scored different numbers), from the runs that say."""
  counts = collections.defaultdict(set)
  for s in all_scores:
    if s.probes is not None:
      counts[(s.dataset, s.split)].add(s.probes)
  return {k: '/'.join(str(n) for n in sorted(v)) for k, v in counts.items()}


def _method_order(methods: set[str]) -> list[str]:
  def key(m: str) -> tuple[int, str]:
    rank = 0 if m == PRIOR else 1 if m.startswith('ICL') else 2 if m.startswith('FT') else 3
    return rank, m
  return sorted(methods, key=key)


def table(dataset: str, cells: dict[str, dict[str, Cell]],
          chance: dict[tuple[str, str], float],
          probes: dict[tuple[str, str], str]) -> str:
  """A Markdown table: one row per split (with its number of probes), one
  column per method."""
  methods = _method_order({m for per in cells.values() for m in per})
  rows = []
  for split, per in sorted(cells.items()):
    c = chance.get((dataset, split))
    rows.append({'split': split, 'probes': probes.get((dataset, split), '-'),
                 'chance': '-' if c is None else f'{c:.3f}',
                 **{m: str(per[m]) if m in per else '-' for m in methods}})
  return tables.markdown_table(rows, ['split', 'probes', 'chance', *methods])


def plot(dataset: str, cells: dict[str, dict[str, Cell]],
         chance: dict[tuple[str, str], float], path: pathlib.Path) -> None:
  """Bars of accuracy by method per split, spread as error bars, chance dashed."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  splits = sorted(cells)
  methods = _method_order({m for per in cells.values() for m in per})
  width = 0.8 / max(1, len(methods))
  x = np.arange(len(splits))
  fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(splits) + 2), 4))
  for k, method in enumerate(methods):
    got = [cells[s].get(method) for s in splits]
    means = [c.mean if c else np.nan for c in got]
    err = np.array([[c.mean - c.low, c.high - c.mean] if c else [0, 0] for c in got]).T
    ax.bar(x + (k - (len(methods) - 1) / 2) * width, means, width, yerr=err,
           capsize=3, label=method)
  for i, s in enumerate(splits):
    if (dataset, s) in chance:
      ax.hlines(chance[(dataset, s)], i - 0.45, i + 0.45, colors='k',
                linestyles='--', label='chance' if i == 0 else None)
  ax.set_xticks(x, splits, rotation=20, ha='right')
  ax.set_ylim(0, 1)
  ax.set_ylabel('accuracy (summed log-likelihood)')
  ax.set_title(dataset)
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.0, 1.0))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_steps(dataset: str, workdirs: Sequence[pathlib.Path],
               path: pathlib.Path) -> bool:
  """Probe accuracy over training steps of each training run; False if none."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(7, 4))
  drawn = False
  for workdir in workdirs:
    config = _read_json(workdir / 'config.json') or {}
    if config.get('job') != 'train' or _eval_dataset(config) != dataset:
      continue
    curves = collections.defaultdict(list)
    for m in _metrics(workdir):
      for key, value in m.items():
        if key.endswith('/acc_sum'):
          curves[key.split('/')[1]].append((m['step'], value))
    for split, points in sorted(curves.items()):
      steps, values = zip(*points)
      ax.plot(steps, values, 'o-', ms=3,
              label=f'{config.get("label") or _train_method(config)} '
                    f'seed {_seed(config)[0]}: {split}')
      drawn = True
  if drawn:
    ax.set_ylim(0, 1)
    ax.set_xlabel('step')
    ax.set_ylabel('probe accuracy')
    ax.set_title(f'{dataset}: probes during fine-tuning')
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
  plt.close(fig)
  return drawn


Cell3 = tuple[str, str, str]  # (score, domain, grade)


def probe_curves(dataset: str, workdirs: Sequence[pathlib.Path]
                 ) -> tuple[dict[Cell3, dict[str, dict[int, list[float]]]],
                            dict[Cell3, float]]:
  """({(score, domain, grade): {method: {step: [value per seed]}}}, chance
  per cell) of the IC-Train runs scored on `dataset`."""
  out: dict = collections.defaultdict(
      lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
  chance = {}
  for workdir in workdirs:
    config = _read_json(workdir / 'config.json') or {}
    if config.get('job') != 'train' or _eval_dataset(config) != dataset:
      continue
    method = config.get('label') or _train_method(config)
    for m in _metrics(workdir):
      for key, value in m.items():
        if (cell := ictrain.parse_key(key)) is not None:
          out[cell][method][m['step']].append(value)
          if f'{key}/chance' in m:
            chance[cell] = m[f'{key}/chance']
  return out, chance


def plot_probe_steps(dataset: str, workdirs: Sequence[pathlib.Path],
                     prefix: pathlib.Path) -> list[pathlib.Path]:
  """Per score, <prefix>-<score>.png: the score over training steps, one
  panel per (domain, grade), one line per method (mean over seeds, min-max
  shaded), chance dashed. Returns the files written."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  curves, chance = probe_curves(dataset, workdirs)
  written = []
  for score in ictrain.SCORES:
    cells = [c for c in curves if c[0] == score]
    if not cells:
      continue
    domains = [d for d in ictrain.DOMAINS if any(c[1] == d for c in cells)]
    grades = [g for g in ictrain.GRADES if any(c[2] == g for c in cells)]
    fig, axes = plt.subplots(len(domains), len(grades), squeeze=False,
                             sharex=True, sharey=True,
                             figsize=(3.2 * len(grades) + 2, 2.6 * len(domains) + 0.6))
    methods = _method_order({m for c in cells for m in curves[c]})
    colors = {m: f'C{i}' for i, m in enumerate(methods)}
    for r, domain in enumerate(domains):
      for k, grade in enumerate(grades):
        ax = axes[r][k]
        ax.set_title(f'{domain} domain, {grade}', fontsize=9)
        for method, per_step in curves.get((score, domain, grade), {}).items():
          steps = sorted(per_step)
          values = [per_step[s] for s in steps]
          ax.plot(steps, [np.mean(v) for v in values], 'o-', ms=3,
                  color=colors[method], label=method if (r, k) == (0, 0) else None)
          ax.fill_between(steps, [min(v) for v in values],
                          [max(v) for v in values], color=colors[method], alpha=0.2)
        if (score, domain, grade) in chance:
          ax.axhline(chance[(score, domain, grade)], color='k', ls='--', lw=1)
        ax.set_ylim(0, 1)
        if r == len(domains) - 1:
          ax.set_xlabel('step')
      axes[r][0].set_ylabel(f'{score} score')
    fig.suptitle(f'{dataset}: {score} score during IC-Train '
                 '(mean over seeds, min-max shaded; chance dashed)', fontsize=10)
    fig.legend(fontsize=8, loc='upper left', bbox_to_anchor=(0.0, 0.0),
               ncol=min(4, len(methods)))
    fig.tight_layout()
    path = prefix.with_name(f'{prefix.name}-{score}.png')
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    written.append(path)
  return written


def report(root: str | pathlib.Path, out: str | pathlib.Path,
           title: str = 'Results') -> str:
  """Writes <out>.md and the plots for the runs under `root`; returns the
  Markdown."""
  root, out = pathlib.Path(root), pathlib.Path(out)
  scored = {w: scores(w) for w in runs(root)}
  workdirs = [w for w, got in scored.items() if got]  # Not an experiment's own.
  all_scores = [s for got in scored.values() for s in got]
  if not all_scores:
    raise errors.UserError(f'No finished run (a workdir with {DONE}) under {root}.')
  out.parent.mkdir(parents=True, exist_ok=True)
  cells, chance = aggregate(all_scores), chances(all_scores)
  probes = probe_counts(all_scores)
  command = f'python -m icl_iwl.report --root={root} --out={out}' + (
      f' --title={shlex.quote(title)}' if title != 'Results' else '')
  parts = [f'# {title}\n',
           f'Generated by `{command}` '
           f'at revision {paths.revision()} from {len(workdirs)} runs. Cells: mean '
           'over seeds, [min, max] and the number of seeds when more than '
           f'one. `probes`: how many probes each accuracy is over. `{PRIOR}`: the '
           'pretrained model with nothing in context. `chance`: guessing '
           'uniformly among each probe\'s choices.\n']
  for dataset, per_split in cells.items():
    slug = dataset.replace('/', '-')
    parts.append(f'## {dataset}\n\n{table(dataset, per_split, chance, probes)}\n')
    png = out.with_name(f'{out.name}-{slug}.png')
    plot(dataset, per_split, chance, png)
    parts.append(f'![{dataset}]({png.name})\n')
    steps_png = out.with_name(f'{out.name}-{slug}-steps.png')
    if plot_steps(dataset, workdirs, steps_png):
      parts.append(f'![{dataset} during training]({steps_png.name})\n')
    for png in plot_probe_steps(dataset, workdirs, out.with_name(f'{out.name}-{slug}')):
      parts.append(f'![{dataset}: {png.stem.rsplit("-", 1)[-1]} score during '
                   f'training]({png.name})\n')
  parts.append('## Runs\n')
  for w in workdirs:
    command, note = read_command(w)
    parts.append(f'- `{w.relative_to(root) if w != root else "."}`: `{command}` '
                 + note)
  text = '\n'.join(parts) + '\n'
  out.with_suffix('.md').write_text(text)
  return text


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run, so the module imports cleanly)."""
  flags.DEFINE_string('root', None, 'Directory whose finished runs to collect.')
  flags.DEFINE_string('out', None, 'Output path without suffix (default: '
                      '<root>/report).')
  flags.DEFINE_string('title', 'Results', 'Title of the Markdown page.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.root:
    raise app.UsageError('--root is required.')
  out = FLAGS.out or str(pathlib.Path(FLAGS.root) / 'report')
  print(report(FLAGS.root, out, FLAGS.title))


if __name__ == '__main__':
  define_flags()
  app.run(errors.main_wrapper(main))
