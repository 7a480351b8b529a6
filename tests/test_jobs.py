"""The score and eval_icl jobs end to end on the tiny random model."""

import json
import pathlib

import numpy as np
import pytest

from icl_iwl import config_lib
from icl_iwl.jobs import eval_icl
from icl_iwl.jobs import experiment
from icl_iwl.jobs import score

_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'


def _lines(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


def _accuracy(items: list[dict]) -> float:
  return float(np.mean([int(np.argmax(x['logprob'])) == x['answer'] for x in items]))


def test_quickstart_scores_every_builtin_question(tmp_path):
  config = config_lib.load_file(f'{_CONFIGS}/quickstart.py:tiny')
  (row,) = score.run(config, tmp_path)
  items = _lines(tmp_path / 'quickstart.jsonl')
  assert row['n'] == len(items) == 12
  assert row['acc_sum'] == pytest.approx(_accuracy(items))
  assert 'quickstart' in (tmp_path / 'results.md').read_text()


def test_eval_icl_writes_consistent_tables_and_items_and_resumes_by_split(
    tmp_path, monkeypatch):
  config = config_lib.load_file(f'{_CONFIGS}/eval_icl.py:syllogisms,tiny')
  rows = eval_icl.run(config, tmp_path)
  assert [r['split'] for r in rows] == ['test_conclusion', 'test_control']
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['splits'] == rows and summary['kinds'] == []
  for row in rows:
    baseline = _lines(tmp_path / f"{row['split']}-baseline.jsonl")
    icl = _lines(tmp_path / f"{row['split']}-icl.jsonl")
    assert len(baseline) == len(icl) == row['n']
    assert row['baseline'] == pytest.approx(_accuracy(baseline))
    assert row['chance'] == pytest.approx(1 / 6)  # 6-way, as in the paper.
    assert row['icl_min'] <= row['icl'] <= row['icl_max']
    # The documents fit: one context, and in-context scores differ from none.
    assert row['contexts'] == 1
    assert not np.allclose([x['logprob'] for x in baseline], [x['logprob'] for x in icl])
  # A rerun after a kill during the second split scores only that split.
  (tmp_path / 'test_control-row.json').unlink()
  scored = []
  monkeypatch.setattr(eval_icl, 'evaluate_split', lambda *a: scored.append(a[-1]) or (
      dict(rows[1], baseline=-1.0), []))
  again = eval_icl.run(config, tmp_path)
  assert scored == ['test_control']
  assert again == [rows[0], dict(rows[1], baseline=-1.0)]


@pytest.fixture
def scripted_generator(monkeypatch):
  """Augmentation's generator writes one sentence per request: the prompt's
  statement (its line before the answer's label), reworded. (A random
  two-layer model writes no complete sentence; tests/test_decode.py tests
  the real decoder behind generate.load.)"""
  from icl_iwl.augment import generate  # pylint: disable=g-import-not-at-top
  def scripted(requests, options):
    del options
    return [' So, ' + r.prompt.strip().split('\n')[-2].strip().rstrip('.') + '.'
            for r in requests]
  monkeypatch.setattr(generate, 'load', lambda config: generate.Generator(
      'scripted', scripted, lambda text: len(text.split())))


def test_experiment_runs_its_stages_once_and_reports_them(
    tmp_path, capsys, scripted_generator):
  config = config_lib.load_file(f'{_CONFIGS}/experiment.py:tiny')
  config_lib.validate(config, num_devices=8)
  (tmp_path / 'command.txt').write_text('python -m icl_iwl.main --x\n# revision abc\n')
  result = experiment.run(config, tmp_path)
  assert result == {'report': str(tmp_path / 'report.md')}
  text = (tmp_path / 'report.md').read_text()
  # Each stage's run names the command that reproduces it.
  assert "- `finetune`: `python -m icl_iwl.main --x` stage 'finetune'; revision abc" in text
  rows = _lines(tmp_path / 'icl' / 'test_reversal-baseline.jsonl')
  assert 'FT (LoRA 16)' in text and ': ICL (' in text
  # The no-context column is the eval_icl stage's baseline accuracy, the FT
  # column the accuracy of the trained model's per-item scores at its last step.
  lines = text.split('\n')
  header = next(line for line in lines if line.startswith('| split '))
  row = next(line for line in lines if line.startswith('| test_reversal '))
  cells = dict(zip([c.strip() for c in header.split('|')], [c.strip() for c in row.split('|')]))
  assert cells['chance'] == '0.500'
  assert cells['probes'] == str(len(rows))  # The ICL and the FT stage's alike.
  assert cells['random, no context'] == f'{_accuracy(rows):.3f}'
  last = tmp_path / 'finetune' / 'items' / f'step{config.stages.finetune.train.steps}'
  assert cells['FT (LoRA 16)'] == f'{_accuracy(_lines(last / "test_reversal.jsonl")):.3f}'
  # Augmented fine-tuning: trained on the documents plus what the augment
  # stage wrote, scored on the original probes.
  augmented = config.stages.augmented
  aug_last = tmp_path / 'augmented' / 'items' / f'step{augmented.train.steps}'
  assert cells[augmented.label] == (
      f'{_accuracy(_lines(aug_last / "test_reversal.jsonl")):.3f}')
  written = json.loads((tmp_path / 'augment' / 'done.json').read_text())
  assert written['dataset'] == f'jsonl/{config.stages.augment.augment.output}'
  # Same seed and steps as 'finetune': only the training data differs, and
  # so do the trained models' scores.
  logprobs = lambda d: [r['logprob'] for r in _lines(d / 'test_reversal.jsonl')]  # noqa: E731
  assert logprobs(aug_last) != logprobs(last)
  printed = capsys.readouterr().out
  assert f'Report: {tmp_path / "report.md"}' in printed
  icl_files = len(list((tmp_path / 'icl').glob('*.jsonl')))
  assert f'{tmp_path / "icl"}/*.jsonl ({icl_files} files)' in printed
  assert f'{last}/*.jsonl (2 files)' in printed
  done = {s: (tmp_path / s / 'done.json').stat().st_mtime_ns for s in config.order}
  experiment.run(config, tmp_path)  # Finished stages are not run again.
  assert done == {s: (tmp_path / s / 'done.json').stat().st_mtime_ns for s in done}


def test_berglund_files_through_icl_finetuning_and_augmented_finetuning(
    tmp_path, monkeypatch, scripted_generator):
  """The bring-your-own-data chain of docs/results.md on a miniature of the
  public Berglund et al. files: import, then configs/lampinen.py on the
  imported dataset (prior and ICL, local augmentation by the model,
  fine-tuning on the augmented mixture, one seed), then the forward/reverse
  table. (Plain fine-tuning, the stage left out, is the experiment test's.)"""
  from test_data_jsonl import berglund_dir  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import berglund  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('ICL_IWL_DATA_DIR', str(tmp_path / 'tfds'))
  berglund.import_berglund(str(berglund_dir(tmp_path)), 'bg', str(tmp_path / 'tfds'))
  config = config_lib.load_file(f'{_CONFIGS}/lampinen.py:jsonl/bg,augmented,tiny')
  config.order = ('icl', 'augment', 'aug_s0')  # The other stages are not run.
  config_lib.validate(config, num_devices=8)
  experiment.run(config, tmp_path / 'run')
  text = (tmp_path / 'run' / 'report.md').read_text()
  splits = ('test_p2d_reverse', 'test_d2p_reverse')
  for split in splits:
    row = text.split(f'| {split} |')[1].split('\n')[0]
    baseline = _lines(tmp_path / 'run' / 'icl' / f'{split}-baseline.jsonl')
    assert f'{_accuracy(baseline):.3f}' in row  # The prior column.
  assert 'augmented FT (local)' in text
  assert not (tmp_path / 'run' / 'ft_s0').exists()
  done = json.loads((tmp_path / 'run' / 'augment' / 'done.json').read_text())
  assert done['documents'] > 0 and done['dataset'].startswith('jsonl/')
