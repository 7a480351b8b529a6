"""IC-Train: probe structure, context symmetry, the prompt format.

Sampling IC-Train contexts is tested in test_samplers.py.
"""

import re
import statistics

import pytest

from icl_iwl.data import schema
from icl_iwl.data import tokenizer
from icl_iwl.data.builders import ictrain
from icl_iwl.data.builders import ictrain_translation


@pytest.fixture(scope='module')
def full():
  return ictrain.generate(ictrain.FULL)


def _answer(r: dict) -> str:
  return r['choices'][r['answer']].strip()


def test_probe_structure(full):
  train_inputs = {r['input'] for r in full['train']}
  train_text = ' '.join(r['input'] + ' ' + r['output'] for r in full['train'])
  for split in ('test_iwl', 'test_icl', 'test_copy'):
    for r in full[split]:
      assert r['input'] not in train_inputs
      assert r['prompt'] == schema.render_context_prompt(
          r['context_inputs'], r['context_outputs'], r['input'])
      assert all(c == schema.render_answer(c.strip()) for c in r['choices'])
      lengths = {len(c.split()) for c in r['choices']}
      assert len(lengths) == 1, r['choices']  # Same format.
      assert len(set(r['context_inputs'])) == len(r['context_inputs']) == 4
  for r in full['test_copy']:
    wrong = {c.strip() for i, c in enumerate(r['choices']) if i != r['answer']}
    assert wrong & set(r['context_outputs']), r
    assert _answer(r) not in r['context_outputs']
  for r in full['test_iwl']:
    assert _answer(r) not in r['context_outputs']
  novel = {w for ws in ictrain_translation.NOVEL.values() for w in ws}
  for r in full['test_icl']:
    if r['task'] == 'translation':
      word = r['facts'][0].removeprefix('novel:')
      assert word in novel and re.search(rf'\b{word}\b', r['input'])
      assert not re.search(rf'\b{word}\b', train_text)
      shown = [c for c in r['context_inputs'] if re.search(rf'\b{word}\b', c)]
      assert len(shown) == 1
    else:
      labels = {p['output'] for p in full['train']
                if p['task'] == 'classification'}
      assert _answer(r) in labels
      cls = r['facts'][0].removeprefix('remap:')
      trained_label = next(p['output'] for p in full['train']
                           if p['facts'] == [f'label:{cls}'])
      assert _answer(r) != trained_label
      assert schema.render_answer(trained_label) in r['choices']


def _in_context(choice: str, record: dict) -> int:
  """How many of the choice's words (a label: 0 or 1) the context outputs
  hold."""
  seen = {w for out in record['context_outputs'] for w in out.split()}
  return len(set(choice.split()) & seen)


@pytest.mark.parametrize('split', ['test_iwl', 'test_icl', 'test_copy'])
@pytest.mark.parametrize('task', ['translation', 'classification'])
def test_answers_appear_in_context_as_often_as_distractors(full, split, task):
  """Preferring or avoiding words seen in context must not pick the answer.

  Over the split, the mean number of a choice's words found in the context
  outputs is the same for the right choice as for a wrong one. The copy
  probe's near-duplicate output, in the context by design, is left out.
  """
  right, wrong = [], []
  for r in full[split]:
    if r['task'] != task:
      continue
    for i, choice in enumerate(r['choices']):
      if split == 'test_copy' and choice.strip() in r['context_outputs']:
        continue
      (right if i == r['answer'] else wrong).append(_in_context(choice, r))
  assert len(right) == ictrain.FULL.probes_per_task
  assert statistics.mean(right) == pytest.approx(
      statistics.mean(wrong), abs=0.05)


def test_end_marker_is_one_token_that_never_merges(full):
  """Each context example tokenizes exactly as a training target would."""
  tok = tokenizer.load_default()
  assert len(tok.encode(schema.END)) == 1
  for r in full['test_icl'][::20]:
    want = []
    for i, o in zip(r['context_inputs'], r['context_outputs']):
      want += tok.encode(f'Input: {i}\nOutput:')
      want += tok.encode(schema.render_answer(o))
    want += tok.encode(f'Input: {r["input"]}\nOutput:')
    assert tok.encode(r['prompt']) == want
    assert tok.encode(r['choices'][0])[-1] == tok.encode(schema.END)[0]


def test_render_context_prompt():
  assert schema.render_context_prompt(['the dog'], ['femp'], 'the cat') == (
      'Input: the dog\nOutput: femp\nInput: the cat\nOutput:')
  assert schema.render_answer('glon') == ' glon\n'
  with pytest.raises(ValueError, match='differ in length'):
    schema.render_context_prompt(['a'], [], 'b')
