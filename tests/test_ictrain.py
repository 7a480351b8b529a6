"""IC-Train probes by grade (eval/ictrain.py), their scores, the report rows.

Grades are checked independently of the code that builds them: word diffs
by hand, the builder's own contexts, the training split's pairs.
"""

import json
import pathlib

import numpy as np
import pytest

from icl_iwl import config_lib
from icl_iwl import report
from icl_iwl.data import datasets
from icl_iwl.eval import ictrain
from icl_iwl.eval import scoring
from icl_iwl.eval.packing import Item

_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / 'configs'
_LIMIT = 25  # Probes per task and split.


@pytest.fixture(scope='module')
def dataset():
  return datasets.resolve('ictrain', 'full')


@pytest.fixture(scope='module')
def probe_set(dataset):
  return ictrain.ProbeSet.from_dataset(dataset, ','.join(ictrain.GRADES),
                                       'translation', limit=_LIMIT)


@pytest.fixture(scope='module')
def records(dataset):
  return {r['id']: r for kind in ictrain.KINDS
          for r in dataset.records(f'test_{kind}')}


def _words_differing(a: str, b: str) -> int | None:
  """How many word positions differ; None if the word counts differ."""
  wa, wb = a.split(), b.split()
  return None if len(wa) != len(wb) else sum(x != y for x, y in zip(wa, wb))


def _overlap(a: str, b: str) -> int:
  return len(set(a.lower().rstrip('.').split()) & set(b.lower().rstrip('.').split()))


def test_every_kind_task_and_grade_is_built(probe_set):
  counts = {}
  for p in probe_set.probes:
    counts[(p.kind, p.task, p.grade)] = counts.get((p.kind, p.task, p.grade), 0) + 1
  want = {(k, t, g) for k, grades in ictrain.KIND_GRADES.items()
          for t in ('translation', 'classification') for g in grades}
  assert set(counts) == want
  assert set(counts.values()) == {_LIMIT}


def test_contexts_have_their_grade(probe_set, records, dataset):
  train = {}
  for r in dataset.records('train'):
    train.setdefault(r['task'], set()).add((r['input'], r['output']))
  close = []
  for p in probe_set.probes:
    r = records[p.item.id.rsplit('@', 1)[0]]
    built = list(zip(r['context_inputs'], r['context_outputs']))
    choices = [c.strip() for c in r['choices']]
    answer = choices[r['answer']]
    assert p.item.prompt.endswith(f'Input: {r["input"]}\nOutput:')
    assert p.item.choices == tuple(r['choices'])
    shown = ''.join(f'Input: {x}\nOutput: {y}\n' for x, y in p.context)
    assert p.item.prompt == shown + f'Input: {r["input"]}\nOutput:'
    # The near-duplicates in context: one word away, another output.
    near = [(x, y) for x, y in p.context
            if _words_differing(x, r['input']) == 1 and y != answer]
    if p.grade == 'none':
      assert p.context == ()
    elif p.kind == 'icl':  # As built; similar: the nearest pair added.
      assert list(p.context[:len(built)]) == built
    else:  # Built, but near-duplicates replaced by unrelated pairs.
      assert len(near) == (p.grade == 'near_duplicate')
      for c, b in zip(p.context, built):
        if c != b:
          assert c in train[r['task']] and c not in built
          assert not set(c[1].split()) & {w for ch in choices for w in ch.split()}
          assert _words_differing(b[0], r['input']) == 1
    if p.grade == 'similar':
      assert len(p.context) == len(built) + 1
      x, y = p.context[-1]
      assert (x, y) in train[r['task']] and x != r['input']
      assert not (_words_differing(x, r['input']) == 1 and y != answer)
      close.append(_overlap(x, r['input'])
                   >= max(_overlap(b, r['input']) for b, _ in built))
    if p.grade == 'near_duplicate':
      assert p.kind == 'copy'
      assert choices.index(near[0][1]) == p.copy != r['answer']
    if p.grade == 'random' and p.kind == 'copy':
      assert p.copy is not None and choices[p.copy] not in [y for _, y in p.context]
  # The nearest pair (BM25) shares at least as many words with the target
  # as any random example, nearly always.
  assert np.mean(close) > 0.95


def test_chance_levels(probe_set):
  m = probe_set.metrics(
      [scoring.ItemScore('x', p.item.answer, (0.0,) * 4, (1,) * 4, (1,) * 4)
       for p in probe_set.probes])
  cells = [k for k in m if ictrain.parse_key(k)]
  assert all(m[f'{k}/chance'] == pytest.approx(0.25) for k in cells)
  # Uniform guessing hits chance in every cell (the scorer is blind to the
  # order of the choices, so positions do not matter).
  rng = np.random.default_rng(0)
  runs = [ictrain.metrics(probe_set.probes, rng.integers(0, 4, len(probe_set.probes)),
                          probe_set.trained_tasks) for _ in range(200)]
  for k in cells:
    assert np.mean([r[k] for r in runs]) == pytest.approx(0.25, abs=0.02), k


def _fake(kind: str, task: str, grade: str, answer: int, copy: int | None):
  item = Item('p', (' a\n', ' b\n', ' c\n', ' d\n'), answer, id='x')
  return ictrain.Probe(kind, task, grade, (), item, copy)


def test_copy_score_by_hand():
  # Copy probes at near_duplicate: (answer, near-duplicate's choice, predicted).
  table = [('t1', 0, 1, 1), ('t1', 0, 2, 0), ('t1', 1, 0, 0), ('t1', 1, 3, 2),
           ('t2', 2, 3, 3), ('t2', 0, 1, 0)]
  probes = [_fake('copy', task, 'near_duplicate', ans, cp) for task, ans, cp, _ in table]
  probes.append(_fake('iwl', 't2', 'random', 1, None))
  logprobs = [np.eye(4)[pred] for *_, pred in table] + [np.eye(4)[1]]
  scores = [scoring.ItemScore('x', p.item.answer, tuple(lp), (1,) * 4, (1,) * 4)
            for p, lp in zip(probes, logprobs)]
  m = ictrain.ProbeSet(tuple(probes), ('t1',)).metrics(scores)
  assert m['probe/copy/in/near_duplicate'] == 2 / 4   # Rows 1 and 3 copy.
  assert m['probe/iwl/in/near_duplicate'] == 1 / 4    # Row 2 is right.
  assert m['probe/copy/out/near_duplicate'] == 1 / 2  # Row 5 copies.
  assert m['probe/iwl/out/near_duplicate'] == 1 / 2   # Row 6 is right.
  assert m['probe/iwl/out/random'] == 1.0
  assert m['probe/copy/in/near_duplicate/chance'] == 0.25
  assert (m['probe/copy/in/near_duplicate/n'], m['probe/copy/out/near_duplicate/n'],
          m['probe/iwl/out/random/n']) == (4, 2, 1)
  assert 'probe/copy/out/random' not in m
  # Every task trained: everything in domain.
  assert ictrain.metrics(probes, [p for *_, p in table] + [1])[
      'probe/copy/in/near_duplicate'] == 3 / 6


def test_configs_load_and_name_their_conditions():
  for sampler in ('none', 'random', 'similar', 'contrastive', 'mixture'):
    c = config_lib.load_file(f'{_CONFIGS / "ictrain.py"}:classification,{sampler}')
    assert c.data.tasks == 'classification'
    assert (c.data.num_context == 0) == (sampler == 'none')
    assert c.eval.grades
  c = config_lib.load_file(f'{_CONFIGS / "ictrain_experiment.py"}:translation')
  assert len(c.order) == 12 and c.stages.contrastive_s2.seed == 2
  assert c.stages.none_s0.data.sampler == 'random'
  with pytest.raises(config_lib.ConfigError, match="'randm'"):
    config_lib.load_file(f'{_CONFIGS / "ictrain.py"}:translation,randm')
  bad = config_lib.load_file(f'{_CONFIGS / "ictrain.py"}:translation,random,tiny')
  bad.eval.grades = 'none,similr'
  with pytest.raises(config_lib.ConfigError, match="'similr'"):
    config_lib.validate(bad)


def _ictrain_run(root: pathlib.Path, name: str, label: str, seed: int,
                 curve: list[float]) -> None:
  workdir = root / name
  workdir.mkdir(parents=True)
  config = {'job': 'train', 'seed': seed, 'label': label,
            'model': {'checkpoint': 'random', 'lora': {'rank': 0}},
            'data': {'dataset': 'ictrain', 'config': 'full', 'seed': seed},
            'eval': {'dataset': '', 'config': 'full'}}
  (workdir / 'config.json').write_text(json.dumps(config))
  (workdir / 'done.json').write_text('{}')
  lines = []
  for i, v in enumerate(curve):
    lines.append(json.dumps({
        'step': 10 * (i + 1), 'probe/icl/out/random': v,
        'probe/icl/out/random/chance': 0.25, 'probe/copy/in/near_duplicate': 1 - v,
        'probe/copy/in/near_duplicate/chance': 0.25}))
    lines.append(json.dumps({'step': 10 * (i + 1), 'train/loss': 1.0}))
  (workdir / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')


def test_report_rows_by_grade_with_spread_and_plots(tmp_path):
  root = tmp_path / 'runs'
  for seed, last in enumerate([0.5, 0.7]):
    _ictrain_run(root, f'cc_s{seed}', 'IC-Train contrastive', seed, [0.3, last])
  _ictrain_run(root, 'none_s0', 'FT, no context', 0, [0.2, 0.25])
  text = report.report(root, tmp_path / 'out' / 'r')
  rows = {}
  header = next(l for l in text.splitlines() if l.startswith('| split'))
  columns = [c.strip() for c in header.strip('|').split('|')]
  for line in text.splitlines():
    if line.startswith('| icl') or line.startswith('| copy'):
      rows[line.split('|')[1].strip()] = dict(
          zip(columns, [c.strip() for c in line.strip('|').split('|')]))
  assert rows['icl out random']['IC-Train contrastive'] == '0.600 [0.500, 0.700] n=2'
  assert rows['icl out random']['FT, no context'] == '0.250'
  assert rows['icl out random']['chance'] == '0.250'
  assert rows['copy in near_duplicate']['IC-Train contrastive'] == '0.400 [0.300, 0.500] n=2'
  for score in ('icl', 'copy'):
    assert (tmp_path / 'out' / f'r-ictrain-full-{score}.png').stat().st_size > 1000
  assert not (tmp_path / 'out' / 'r-ictrain-full-iwl.png').exists()
  curves, chance = report.probe_curves('ictrain/full', list(report.runs(root)))
  assert curves[('icl', 'out', 'random')]['IC-Train contrastive'] == {
      10: [0.3, 0.3], 20: [0.5, 0.7]}
  assert chance[('copy', 'in', 'near_duplicate')] == 0.25


@pytest.mark.parametrize('task', ['translation', 'classification', 'all'])
def test_every_training_example_fits_one_per_row(task):
  from icl_iwl.data import context  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import pipeline  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import samplers  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import tokenizer  # pylint: disable=g-import-not-at-top
  tok = tokenizer.load_default()
  for sampler in ('none', 'contrastive'):
    config = config_lib.load_file(f'{_CONFIGS / "ictrain.py"}:{task},{sampler}')
    d = config.data
    records = datasets.resolve(d.dataset, d.config).records(d.split)
    built = samplers.SAMPLERS.get(d.sampler)(records, d)
    assert {p['task'] for p in built.pairs} == (
        {'translation', 'classification'} if task == 'all' else {task})
    assert pipeline.check_lengths(built, tok, config.train.seq_len) == 0
    # Without context one example a row, ~8 targets a step, as with context:
    # only the few short ones (translation noun phrases) can share a row.
    if sampler == 'none':
      rng = np.random.default_rng(0)
      lengths = np.array([len(context.fit(built(i, rng), tok, config.train.seq_len).tokens)
                          for i in range(len(built))])
      assert np.mean(lengths + lengths.min() <= config.train.seq_len) < 0.06
