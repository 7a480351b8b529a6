"""configs/ictrain_experiment.py:<task>,tiny end to end: IC-Train runs with
probe scores by grade and domain, collected into the report and its plots."""

import json
import pathlib

from icl_iwl import config_lib
from icl_iwl.eval import ictrain
from icl_iwl.jobs import experiment

_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'


def test_tiny_experiment_scores_probes_by_grade_and_reports_them(tmp_path):
  config = config_lib.load_file(f'{_CONFIGS}/ictrain_experiment.py:translation,tiny')
  config_lib.validate(config, num_devices=8)
  assert config.order == ('none_s0', 'contrastive_s0', 'contrastive_s1')
  experiment.run(config, tmp_path)
  want = {f'probe/{s}/{d}/{g}' for k, grades in ictrain.KIND_GRADES.items()
          for s in ((k, 'iwl') if k == 'copy' else (k,)) for g in grades
          for d in ('in', 'out') if s == k or g == 'near_duplicate'}
  for stage in config.order:
    lines = [json.loads(l) for l in (tmp_path / stage / 'metrics.jsonl').read_text().splitlines()]
    evals = [m for m in lines if any(k.startswith('probe/') for k in m)]
    assert [m['step'] for m in evals] == [1]
    for m in evals:
      got = {k for k in m if ictrain.parse_key(k)}
      assert got == want, stage
      assert all(0 <= m[k] <= 1 and m[f'{k}/chance'] == 0.25 for k in got)
      # Out of domain: the held-out task's icl probes at grade random.
      n = m['probe/icl/out/random/n']
      items = (tmp_path / stage / 'items' / 'step1' / 'ictrain.jsonl').read_text()
      assert n == items.count('"classification-icl-') / 3 > 0  # 3 grades each.
  text = (tmp_path / 'report.md').read_text()
  row = next(l for l in text.splitlines() if l.startswith('| icl out random'))
  assert row.count('n=2') == 1  # Two seeds of contrastive, one of none.
  assert row.split('|')[2].strip() == str(int(n))  # Its probes column.
  for score in ictrain.SCORES:
    assert (tmp_path / f'report-ictrain-small-{score}.png').stat().st_size > 1000
