"""Every notebook in notebooks/ runs top to bottom in tiny mode.

Each notebook is executed in a fresh python3 kernel (nbclient) with
ICL_IWL_NOTEBOOK_TINY=1 (a random two-layer model on the small datasets),
its working directory and ICL_IWL_NOTEBOOK_WORKDIR in a temporary directory.
The kernel inherits this process's environment, so it sees the 8 fake CPU
devices of conftest.py. A cell appended to the in-memory copy prints the
notebook's results as JSON, and the tests check their values.
"""

import json
import math
import os
import pathlib

import nbclient
import nbformat
import pytest

_NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / 'notebooks'
_CELL_TIMEOUT = 600  # Seconds; a whole tiny notebook takes a minute or two.

# Appended to each notebook: what its last cell prints as JSON.
_REPORTS = {
    '01_scoring_and_icl.ipynb': """{
        'tiny': TINY, 'preset': model.config.name, 'num_items': len(ITEMS),
        'logprob': [s.logprob for s in item_scores], 'splits': splits,
        'num_documents': len(documents), 'accuracy': accuracy, 'chance': chance,
        'margins': margins, 'num_probes': NUM_PROBES}""",
    '02_finetune.ipynb': """{
        'tiny': TINY, 'workdir': str(WORKDIR), 'steps': STEPS, 'splits': splits,
        'saved_step': int(saved['step']),
        'loss': [m['train/loss'] for m in train_log],
        'loss_steps': [m['step'] for m in train_log],
        'eval_steps': [m['step'] for m in eval_log],
        'last_eval': {s: eval_log[-1][f'eval/{s}/acc_sum'] for s in splits},
        'accuracy': accuracy, 'margins': margins,
        'item_margins': {n: {s: [margin(x) for x in scores[n][s]] for s in splits}
                         for n in scores}}""",
    '03_samplers_and_augmentation.ipynb': """{
        'tiny': TINY, 'grades': list(data_config.grades), 'observed': observed,
        'num_draws': NUM_DRAWS, 'result': result, 'audit': audit,
        'num_generated': len(generated)}""",
}


def _execute(name: str, tmp: pathlib.Path) -> nbformat.NotebookNode:
  """Runs notebook `name` in a kernel whose cwd and workdir are under `tmp`."""
  nb = nbformat.read(_NOTEBOOKS / name, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell(
      f'import json\nprint(json.dumps({_REPORTS[name]}))'))
  env = dict(os.environ, ICL_IWL_NOTEBOOK_TINY='1',
             ICL_IWL_NOTEBOOK_WORKDIR=str(tmp / 'workdir'))
  env.pop('MPLBACKEND', None)  # Keep the kernel's inline backend.
  client = nbclient.NotebookClient(nb, timeout=_CELL_TIMEOUT, kernel_name='python3',
                                   resources={'metadata': {'path': str(tmp)}})
  client.execute(env=env)
  return nb


@pytest.fixture(scope='module')
def executed(tmp_path_factory) -> dict[str, tuple[pathlib.Path, object]]:
  """Every notebook, one kernel at a time (each holds ~2.5 GB: two at once
  beside the other xdist worker took the run to 12 GB summed): {name: (its
  tmp dir, the executed notebook or the exception it raised)}."""
  out = {}
  for name in _REPORTS:
    tmp = tmp_path_factory.mktemp(name.split('.')[0])
    try:
      out[name] = (tmp, _execute(name, tmp))
    except Exception as e:  # pylint: disable=broad-except  # Raised by its test.
      out[name] = (tmp, e)
  return out


def _report(executed, name: str) -> tuple[dict, list]:
  """(The JSON the appended cell printed, the notebook's own cells)."""
  _, nb = executed[name]
  if isinstance(nb, BaseException):
    raise nb
  errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if o.output_type == 'error']
  assert not errors, errors
  text = ''.join(o.text for o in nb.cells[-1].outputs
                 if o.output_type == 'stream' and o.name == 'stdout')
  return json.loads(text), nb.cells[:-1]


def _figures(cells) -> int:
  return sum('image/png' in o.get('data', {}) for c in cells if c.cell_type == 'code'
             for o in c.outputs)


def test_every_notebook_is_tested_and_stored_without_outputs():
  paths = sorted(_NOTEBOOKS.glob('*.ipynb'))
  assert [p.name for p in paths] == sorted(_REPORTS)
  for path in paths:
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get('outputs') or c.get('execution_count')
                   for c in nb.cells if c.cell_type == 'code'), (
        f'{path.name} is stored with outputs; clear them.')


def test_scoring_and_icl(executed):
  out, cells = _report(executed, '01_scoring_and_icl.ipynb')
  assert out['tiny'] and out['preset'] == 'tiny'
  assert len(out['logprob']) == out['num_items'] == 4
  for logprob in out['logprob']:
    assert all(math.isfinite(x) and x < 0 for x in logprob), logprob
  assert out['splits'] == ['test_forward', 'test_reversal']
  assert out['num_documents'] > 0
  assert set(out['accuracy']) == set(out['splits'])
  for split, acc in out['accuracy'].items():
    assert set(acc) == {'no context', 'in context'}
    assert all(0 <= a <= 1 for a in acc.values()), acc
    # Without context: a whole number of the probes is right.
    correct = acc['no context'] * out['num_probes']
    assert abs(correct - round(correct)) < 1e-6, acc
    assert out['chance'][split] == 0.5  # Both kinds of probe are 2-way.
    assert set(out['margins'][split]) == set(acc)
    assert all(math.isfinite(m) for m in out['margins'][split].values())
  assert _figures(cells) == 1


def test_finetune(executed):
  out, cells = _report(executed, '02_finetune.ipynb')
  tmp_path, _ = executed['02_finetune.ipynb']
  steps = out['steps']
  assert out['tiny'] and steps == 4
  assert pathlib.Path(out['workdir']) == tmp_path / 'workdir'
  assert (tmp_path / 'workdir' / 'metrics.jsonl').exists()
  assert out['saved_step'] == steps
  assert out['loss_steps'] == list(range(1, steps + 1))
  assert all(math.isfinite(x) and x > 0 for x in out['loss']), out['loss']
  assert out['loss'][-1] < out['loss'][0], out['loss']
  assert out['eval_steps'] == [2, 4]
  assert out['splits'] == ['test_forward', 'test_reversal']
  for split, acc in out['accuracy'].items():
    assert all(0 <= a <= 1 for a in acc.values()), acc
    # Scoring the checkpoint reproduces the training loop's last eval, but for
    # items whose choices tie to float32 rounding (the tiny random model has
    # such ties; summation order may differ between the two scorers).
    ties = sum(abs(m) < 1e-4 for m in out['item_margins']['fine-tuned'][split])
    flipped = abs(acc['fine-tuned'] - out['last_eval'][split]) * len(
        out['item_margins']['fine-tuned'][split])
    assert flipped <= ties + 1e-6, (acc, out['last_eval'])
    for name, a in acc.items():  # A probe is right iff its margin is positive
      item_margins = out['item_margins'][name][split]  # (an exact tie: argmax's
      positive = sum(m > 0 for m in item_margins)      # first choice).
      assert positive <= a * len(item_margins) + 1e-6
      assert a * len(item_margins) <= positive + sum(m == 0 for m in item_margins) + 1e-6
      assert out['margins'][split][name] == pytest.approx(sum(item_margins) / len(item_margins))
  assert _figures(cells) == 2


def test_samplers_and_augmentation(executed):
  out, cells = _report(executed, '03_samplers_and_augmentation.ipynb')
  assert out['tiny']
  # Observed grade frequencies within 4 binomial standard deviations.
  n = out['num_draws']
  for p, q in zip(out['grades'], out['observed']):
    assert abs(p - q) <= 4 * math.sqrt(p * (1 - p) / n), (out['grades'], out['observed'])
  result = out['result']
  assert out['num_generated'] == result['documents'] == sum(result['per_pass'].values())
  assert set(result['per_pass']) <= {'rephrase', 'reverse', 'infer'}
  for row in out['audit'].values():  # Every sentence gets exactly one label.
    assert row['sentences'] == sum(row[k] for k in ('true', 'false', 'undetermined', 'none'))
  assert _figures(cells) == 2
