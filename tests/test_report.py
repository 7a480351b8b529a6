"""icl_iwl.report: runs collected into tables of mean and spread over seeds."""

import json
import pathlib

import pytest

from icl_iwl import errors
from icl_iwl import report


def _run(root: pathlib.Path, name: str, config: dict, **files) -> pathlib.Path:
  workdir = root / name
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps(config))
  (workdir / 'done.json').write_text('{}')
  (workdir / 'command.txt').write_text(f'python -m icl_iwl.main --workdir={name}\n# revision abc\n')
  for file, content in files.items():
    (workdir / file.replace('_', '.', 1)).write_text(content)
  return workdir


def _eval_icl(seed: int, baseline: float, icl: float) -> tuple[dict, str]:
  config = {'job': 'eval_icl', 'seed': 0, 'model': {'checkpoint': 'embedded'},
            'eval': {'dataset': 'reversals', 'config': 'full'}, 'icl': {'seed': seed}}
  summary = {'splits': [{'split': 'test_reversal', 'n': 40, 'chance': 0.5,
                         'baseline': baseline, 'icl': icl, 'protocol': 'paper'}]}
  return config, json.dumps(summary)


def _train(seed: int, rank: int, accs: list[float]) -> tuple[dict, str]:
  config = {'job': 'train', 'seed': seed, 'model': {'checkpoint': 'embedded',
                                                    'lora': {'rank': rank}},
            'data': {'dataset': 'reversals', 'config': 'full', 'seed': 0},
            'eval': {'dataset': '', 'config': 'full'}}
  lines = [json.dumps({'step': 10 * (i + 1), 'eval/test_reversal/acc_sum': a})
           for i, a in enumerate(accs)]
  lines.insert(1, json.dumps({'step': 10, 'train/loss': 2.0}))
  return config, '\n'.join(lines) + '\n{"step": 99, "eval/te'  # A cut last line.


def test_report_tables_mean_and_spread_over_seeds(tmp_path):
  root = tmp_path / 'runs'
  for seed, (b, i) in enumerate([(0.25, 0.5), (0.25, 0.75)]):
    config, summary = _eval_icl(seed, b, i)
    _run(root, f'icl{seed}', config, summary_json=summary)
  for seed, final in enumerate([0.0, 0.1, 0.2]):
    config, metrics = _train(seed, 16, [0.5, final])
    _run(root, f'lora{seed}', config, metrics_jsonl=metrics)
  config, metrics = _train(0, 0, [0.4])
  config['label'] = 'my FT'
  labelled = _run(root, 'labelled', config, metrics_jsonl=metrics)
  # Its last eval's per-item scores: 20 probes (the eval_icl runs say 40).
  (labelled / 'items' / 'step10').mkdir(parents=True)
  (labelled / 'items' / 'step10' / 'test_reversal.jsonl').write_text(
      '{"logprob": [-1, -2]}\n' * 20)
  (root / 'unfinished').mkdir()
  (root / 'unfinished' / 'config.json').write_text(json.dumps(config))

  text = report.report(root, tmp_path / 'out' / 'r', title='T')
  assert text == (tmp_path / 'out' / 'r.md').read_text()
  row = next(line for line in text.splitlines() if line.startswith('| test_reversal'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  header = next(line for line in text.splitlines() if line.startswith('| split'))
  columns = [c.strip() for c in header.strip('|').split('|')]
  got = dict(zip(columns, cells))
  assert columns == ['split', 'probes', 'chance', 'prior', 'ICL (paper)', 'FT (LoRA 16)',
                     'my FT']
  assert got['probes'] == '20/40'
  assert got['chance'] == '0.500'
  assert got['prior'] == '0.250 [0.250, 0.250] n=2'
  assert got['ICL (paper)'] == '0.625 [0.500, 0.750] n=2'
  assert got['FT (LoRA 16)'] == '0.100 [0.000, 0.200] n=3'  # The last eval of each.
  assert got['my FT'] == '0.400'
  assert (tmp_path / 'out' / 'r-reversals-full.png').stat().st_size > 1000
  assert (tmp_path / 'out' / 'r-reversals-full-steps.png').stat().st_size > 1000
  assert '`icl0`: `python -m icl_iwl.main --workdir=icl0` revision abc' in text
  assert 'unfinished' not in text


def test_a_trained_run_alone_reports_chance_from_its_probes(tmp_path):
  root = tmp_path / 'runs'
  config, metrics = _train(0, 0, [0.4])
  workdir = _run(root, 'ft', config, metrics_jsonl=metrics)
  (workdir / 'items' / 'step10').mkdir(parents=True)
  # 3 probes of 2 choices and 1 of 4: chance (3/2 + 1/4) / 4 = 0.4375.
  (workdir / 'items' / 'step10' / 'test_reversal.jsonl').write_text(
      '{"logprob": [-1, -2]}\n' * 3 + '{"logprob": [-1, -2, -3, -4]}\n')
  text = report.report(root, tmp_path / 'out' / 'r', title='T')
  row = next(line for line in text.splitlines() if line.startswith('| test_reversal'))
  assert [c.strip() for c in row.strip('|').split('|')][:3] == [
      'test_reversal', '4', '0.438']


def test_report_without_runs_is_a_user_error(tmp_path):
  with pytest.raises(errors.UserError, match='No finished run'):
    report.report(tmp_path, tmp_path / 'r')
