"""The lm-eval-harness backend: against a straightforward reference on a tiny
model, and against lm-eval's own HF backend on the real 270M."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

lm_eval = pytest.importorskip('lm_eval')

from icl_iwl import config_lib  # noqa: E402
from icl_iwl import lm_eval as backend  # noqa: E402
from icl_iwl import runtime  # noqa: E402
from icl_iwl.eval.packing import Item  # noqa: E402
from icl_iwl.sharding import mesh as mesh_lib  # noqa: E402
from lm_eval import utils as lm_utils  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402

_FEWSHOT = ''.join(f'Q: Is {w} a word? A: yes\n\n' for w in
                   ('femp', 'glon', 'troff', 'yomp', 'blick', 'dax', 'wug'))


# A tiny Gemma 3 with large random weights (sharp, varied predictions).
from test_scoring import _setup, reference_logp  # pylint: disable=g-import-not-at-top,g-bad-import-order


def _lm(**scorer) -> backend.IclIwlLM:
  """The backend on the tiny model, with ScorerConfig fields `scorer`."""
  model, params, tok = _setup()
  config = config_lib.base('score')
  config.model = config_lib.model('tiny', 'random')
  config.scorer = config_lib.scorer(**scorer)
  return backend.IclIwlLM(rt=runtime.Runtime(
      config, mesh_lib.make_mesh(config.mesh), config.rules, model, params, tok))


def _reference(context: list[int], continuation: list[int]) -> tuple[float, bool]:
  """Full forward over context + continuation; log_softmax; sum and argmax
  over the continuation's positions."""
  at = np.arange(len(context) - 1, len(context) + len(continuation) - 1)
  logp = reference_logp(context + continuation, at)
  return (float(logp[np.arange(len(at)), continuation].astype(np.float64).sum()),
          bool((logp.argmax(-1) == continuation).all()))


def _next_token(ids: list[int]) -> int:
  """The argmax after ids, by a full forward."""
  return int(reference_logp(ids, [len(ids) - 1])[0].argmax())


def _split(context: str, continuation: str) -> tuple[list[int], list[int]]:
  """lm-eval's split: trailing context spaces move to the continuation;
  [BOS] + context ids, and the whole text's ids after them; an empty context
  is [BOS]."""
  tok = _setup()[2]
  if not context:
    return [tok.bos_id], tok.encode(continuation)
  context, continuation = context.rstrip(), context[len(context.rstrip()):] + continuation
  context_ids = tok.encode(context, add_bos=True)
  whole = tok.encode(context + continuation, add_bos=True)
  assert whole[:len(context_ids)] == context_ids
  return context_ids, whole[len(context_ids):]


_PAIRS = [  # (context, continuation): shared few-shot prefixes, shared contexts,
    (_FEWSHOT + 'Q: Is femp a word? A:', ' yes'),  # one-token and longer ones,
    (_FEWSHOT + 'Q: Is femp a word? A:', ' no, it is not'),  # a trailing space,
    (_FEWSHOT + 'Q: Is glon a word? A: ', 'yes'),  # an empty context.
    (_FEWSHOT + 'Q: Is glon a word? A: ', 'no'),
    ('The capital of France is', ' Paris'),
    ('The capital of France is', ' Rome'),
    ('2 + 2 =', ' 4'),
    ('', 'Hello world'),
]


def test_loglikelihood_equals_the_reference():
  lm = _lm()
  requests = [Instance('loglikelihood', {}, pair, i) for i, pair in enumerate(_PAIRS)]
  got = lm.loglikelihood(requests, disable_tqdm=True)
  for pair, (logprob, greedy) in zip(_PAIRS, got):
    expected, expected_greedy = _reference(*_split(*pair))
    np.testing.assert_allclose(logprob, expected, atol=1e-4, rtol=0)
    assert greedy == expected_greedy


def test_is_greedy_on_the_model_s_own_continuation():
  lm = _lm()
  tok = _setup()[2]
  context = tok.encode(_FEWSHOT + 'Q: Is dax a word? A:', add_bos=True)
  greedy = []
  for _ in range(4):  # The model's own greedy continuation, token by token.
    greedy.append(_next_token(context + greedy))
  other = greedy[:2] + [(greedy[2] + 1) % tok.vocab_size] + greedy[3:]
  got = lm._loglikelihood_tokens([(None, context, greedy), (None, context, other)])
  assert [g for _, g in got] == [True, False]
  for (logprob, _), continuation in zip(got, (greedy, other)):
    np.testing.assert_allclose(logprob, _reference(context, continuation)[0],
                               atol=1e-4, rtol=0)


def test_rolling_equals_the_reference_in_windows():
  lm = _lm(buckets=(32, 64))  # Windows of 63 predicted tokens.
  tok = _setup()[2]
  texts = [_FEWSHOT * 2, 'A short text.']
  got = lm.loglikelihood_rolling(
      [Instance('loglikelihood_rolling', {}, (t,), i) for i, t in enumerate(texts)],
      disable_tqdm=True)
  for text, logprob in zip(texts, got):
    ids = tok.encode(text)
    # lm-eval's windows of the text after BOS, each scored by a full forward.
    windows = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
        ids, tok.bos_id, max_seq_len=63, context_len=1)]
    assert sum(len(c) for _, c in windows) == len(ids)
    expected = sum(_reference(list(c), list(p))[0] for c, p in windows)
    np.testing.assert_allclose(logprob, expected, atol=1e-3, rtol=0)
  assert len(tok.encode(texts[0])) > 2 * 63  # Three windows or more.


def test_greedy_generation_equals_step_by_step_argmax():
  lm = _lm()
  tok = _setup()[2]
  contexts = ['The capital of France is', _FEWSHOT + 'Q: Is dax a word? A:']
  kwargs = [{'until': ['\n\n'], 'max_gen_toks': 6, 'do_sample': False},
            {'until': ['Q:'], 'max_gen_toks': 5, 'temperature': 0.0}]
  requests = [Instance('generate_until', {}, (c, k), i)
              for i, (c, k) in enumerate(zip(contexts, kwargs))]
  got = lm.generate_until(requests)
  for context, k, text in zip(contexts, kwargs, got):
    ids = tok.encode(context, add_bos=True)
    new = []
    for _ in range(k['max_gen_toks']):  # A full forward per new token.
      new.append(_next_token(ids + new))
      if new[-1] == tok.eos_id:
        new.pop()
        break
    expected = tok.decode(new)
    stop = k['until'][0]
    assert text == (expected[:expected.index(stop)] if stop in expected else expected)
  assert got[0]  # Something was generated.


def test_each_distinct_context_is_encoded_once():
  lm = _lm()
  scorer = lm.scorer
  memories, prompt_tokens = [], []
  encode_context, run = scorer.encode_context, scorer._run

  def counting_encode(ids):
    memories.append(len(ids))
    return encode_context(ids)

  def counting_run(batch, memory):
    prompt_tokens.append(int(((batch.branches == 0) & (batch.segments > 0)).sum()))
    return run(batch, memory)

  scorer.encode_context, scorer._run = counting_encode, counting_run
  questions = [f'Q: Is {w} a word? A:' for w in ('femp', 'glon', 'troff', 'yomp', 'dax')]
  requests = [Instance('loglikelihood', {}, (_FEWSHOT + q, c), 0)
              for q in questions for c in (' yes', ' no', ' maybe')]
  lm.loglikelihood(requests, disable_tqdm=True)
  tok = _setup()[2]
  contexts = [tok.encode(_FEWSHOT + q, add_bos=True) for q in questions]
  shared = min(len(c) for c in contexts) - 1
  while any(c[:shared] != contexts[0][:shared] for c in contexts):
    shared -= 1
  # The few-shot prefix once into a memory; each question once in the rows
  # (not once per choice).
  assert memories == [shared] and shared > len(tok.encode(_FEWSHOT)) - 2
  assert sum(prompt_tokens) == sum(len(c) - shared for c in contexts)


def test_plan_groups_contexts_by_their_common_prefix():
  a, b = (1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 9)
  c, d, e = (7, 8, 9, 1), (7, 8, 9), (7, 8)  # d is a prefix of c.
  groups = backend.plan([a, b, c, d, e], min_shared=3, fits=[True] * 5)
  # At most all but the shortest context's last token; e shares too little.
  assert sorted((g.shared, sorted(g.items)) for g in groups) == [
      (0, [4]), (2, [2, 3]), (4, [0, 1])]
  # Alone: in its rows if it fits, else all but its last token in a memory.
  assert backend.plan([a], 3, [True]) == [backend.Group(0, [0])]
  assert backend.plan([a], 3, [False]) == [backend.Group(5, [0])]


def test_registered_beside_lm_eval_s_own_models():
  from lm_eval.api import registry  # pylint: disable=g-import-not-at-top
  assert registry.get_model('icl_iwl') is backend.IclIwlLM
  assert registry.get_model('hf').__name__ == 'HFLM'


def _task(tmp_path, num_fewshot: int = 0) -> str:
  items = [Item('The capital of France is', (' Paris', ' Rome', ' Oslo'), 0),
           Item('2 + 2 =', (' 4', ' 5'), 0),
           Item('glon are ', ('less dangerous than femp.', 'more dangerous than femp.'), 1)]
  fewshot = [Item('The capital of Italy is', (' Rome', ' Paris'), 0),
             Item('1 + 1 =', (' 2', ' 3'), 0)]
  return backend.write_task(tmp_path, 'icl_iwl_tiny', items, fewshot, num_fewshot)


def test_simple_evaluate_runs_a_local_task_and_logs_the_reference_numbers(tmp_path):
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top
  name = _task(tmp_path, num_fewshot=2)
  out = lm_eval.simple_evaluate(
      model=_lm(), tasks=[name], task_manager=TaskManager(include_path=str(tmp_path)),
      log_samples=True)
  samples = out['samples'][name]
  assert len(samples) == 3
  correct = []
  for sample in samples:
    got = [r[0][0] for r in sample['resps']]  # One (logprob, greedy) each.
    expected = [_reference(*_split(*args)) for args in sample['arguments']]
    np.testing.assert_allclose(got, [e[0] for e in expected], atol=1e-4, rtol=0)
    correct.append(int(np.argmax([e[0] for e in expected])) == sample['target'])
  assert sample['arguments'][0][0].startswith('The capital of Italy is Rome\n\n1 + 1 = 2\n\n')
  assert out['results'][name]['acc,none'] == pytest.approx(np.mean(correct))


@pytest.mark.e2e
def test_command_line_runs_the_backend(tmp_path):
  name = _task(tmp_path)
  # One device: this is the command line's test (8 devices: the tests above).
  env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', XLA_FLAGS=(
      os.environ['XLA_FLAGS'] + ' --xla_force_host_platform_device_count=1'))
  out = subprocess.run(
      [sys.executable, '-m', 'icl_iwl.lm_eval', '--model', 'icl_iwl',
       '--model_args', 'checkpoint=random,preset=tiny', '--tasks', name,
       '--include_path', str(tmp_path), '--output_path', str(tmp_path / 'out')],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  results = [json.loads(p.read_text()) for p in (tmp_path / 'out').rglob('results*.json')]
  assert results and 'acc,none' in results[0]['results'][name]


# The real 270M against lm-eval's own HF backend ------------------------------


@pytest.mark.real_model
def test_real_270m_matches_lm_eval_s_hf_backend(tmp_path, real_rt, real_reference,
                                                 real_hf_tokenizer):
  from lm_eval.models.huggingface import HFLM  # pylint: disable=g-import-not-at-top
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import datasets  # pylint: disable=g-import-not-at-top
  from icl_iwl.eval import probes  # pylint: disable=g-import-not-at-top

  reversals = datasets.resolve('reversals', 'small')
  probe_items = [item for split in reversals.probe_splits()
                 for item in probes.items(reversals.records(split))]
  fewshot, items = probe_items[:3], probe_items[3:15]
  assert len(items) == 12
  name = backend.write_task(tmp_path, 'icl_iwl_reversals', items, fewshot, 3)
  manager = TaskManager(include_path=str(tmp_path))

  def run(lm):
    out = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager,
                                  log_samples=True)
    samples = sorted(out['samples'][name], key=lambda s: s['doc_id'])
    return out['results'][name]['acc,none'], [s['resps'] for s in samples]

  ours_acc, ours = run(backend.IclIwlLM(rt=real_rt))
  ref_acc, ref = run(HFLM(pretrained=real_reference, tokenizer=real_hf_tokenizer, batch_size=4,
                          add_bos_token=True))
  got = np.asarray([[r[0][0] for r in resps] for resps in ours])
  expected = np.asarray([[r[0][0] for r in resps] for resps in ref])
  np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
  assert [[r[0][1] for r in resps] for resps in ours] == [
      [r[0][1] for r in resps] for resps in ref]
  assert ours_acc == ref_acc
