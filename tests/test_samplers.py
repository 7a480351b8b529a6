"""Samplers, the context layer and the retrieval indexes.

Every invariant is computed here from the records themselves (words, tasks,
outputs), not read back from the code under test.
"""

import collections
import functools
import hashlib
import math
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from icl_iwl.data import context
from icl_iwl.data import embedding
from icl_iwl.data import pipeline
from icl_iwl.data import retrieval
from icl_iwl.data import samplers
from icl_iwl.data import schema
from icl_iwl.data import tokenizer
from icl_iwl.data.builders import ictrain
from icl_iwl.model import gemma
from icl_iwl.model import presets


def _config(**fields) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(num_context=4, similarity='bm25',
                                     grades=(0.5, 0.5), near_duplicates=False,
                                     mixture=''))
  c.update(fields)
  return c


@pytest.fixture(scope='module')
def tok():
  return tokenizer.load_default()


@pytest.fixture(scope='module')
def small():
  return ictrain.generate(ictrain.SMALL)['train']


@pytest.fixture(scope='module')
def full():
  return ictrain.generate(ictrain.FULL)['train']


def _fake_embed(texts):
  """A cheap deterministic embedding: a random vector per text (no ties)."""
  return np.stack([np.random.default_rng(list(hashlib.sha256(t.encode()).digest()))
                   .normal(size=64).astype(np.float32) for t in texts])


_SAMPLERS = {
    'random': _config(),
    'similar': _config(),
    'similar_embedding': _config(similarity='embedding'),
    'contrastive': _config(grades=(0.25, 0.25, 0.25, 0.25, 0)),
    'contrastive_near_duplicates': _config(grades=(0, 0.5, 0.5), near_duplicates=True),
    'mixture': _config(mixture='random:1,similar:1,contrastive:2'),
}


def _build(label: str, records, embed=_fake_embed):
  name = label.split('_')[0]
  return samplers.SAMPLERS.get(name)(records, _SAMPLERS[label], embed=embed)


# Samplers --------------------------------------------------------------------


@pytest.mark.parametrize('label', sorted(_SAMPLERS))
def test_contexts_hold_k_other_inputs_of_the_target_task(small, label):
  sampler = _build(label, small)
  pairs = small  # All task pairs.
  assert len(sampler) == len(pairs)
  rng = np.random.default_rng(0)
  for index in range(len(sampler)):
    ex = sampler(index, rng)
    target = pairs[index]
    assert len(ex.context) == len(ex.sources) == len(ex.similar) == 4
    assert len(set(ex.sources)) == 4 and index not in ex.sources
    assert all(pairs[j]['input'] != target['input'] for j in ex.sources)
    assert {pairs[j]['task'] for j in ex.sources} == {target['task']}
    # The pieces are exactly the IC-Train prompt format.
    assert ''.join(ex.context) + ex.prompt == schema.render_context_prompt(
        [pairs[j]['input'] for j in ex.sources],
        [pairs[j]['output'] for j in ex.sources], target['input'])
    assert ex.target == schema.render_answer(target['output'])


@pytest.mark.parametrize('label', sorted(_SAMPLERS))
def test_a_seed_fixes_every_draw(small, label):
  a, b = _build(label, small), _build(label, small)
  draws = [[s(i, np.random.default_rng(i)) for i in range(len(s))] for s in (a, b)]
  assert draws[0] == draws[1]
  other = [a(i, np.random.default_rng(i + 1)) for i in range(len(a))]
  assert (draws[0] == other) == label.startswith('similar')  # Top-k is fixed.


def test_copies_of_the_target_input_never_enter_its_context():
  records = [{'input': f'w{i % 6} x{i % 6}', 'output': f'o{i}', 'task': 't'}
             for i in range(24)]  # Each input four times.
  for name in ('random', 'similar', 'contrastive'):
    sampler = samplers.SAMPLERS.get(name)(
        records, _config(num_context=5, grades=(0, 0, 1)))
    for index in range(len(records)):
      ex = sampler(index, np.random.default_rng(index))
      assert len(ex.sources) == 5
      assert all(records[j]['input'] != records[index]['input'] for j in ex.sources)
  with pytest.raises(ValueError, match=r"Tasks \['t'\] have no 6 other inputs"):
    samplers.RandomContext(records, _config(num_context=6))


def test_untagged_pairs_form_one_task_and_small_tasks_fail():
  untagged = [{'input': str(i), 'output': str(i)} for i in range(5)]
  ex = samplers.RandomContext(untagged, _config())(0, np.random.default_rng(0))
  assert sorted(ex.sources) == [1, 2, 3, 4]
  records = [{'input': f'{t} {i}', 'output': str(i), 'task': t}
             for t in 'ab' for i in range(6 if t == 'a' else 4)]
  with pytest.raises(ValueError, match=r"Tasks \['b'\]"):
    samplers.RandomContext(records, _config())
  with pytest.raises(ValueError, match='needs task pairs'):
    samplers.RandomContext([{'text': 'a document'}], _config())


def _graded_records() -> list[dict]:
  """Targets q{n}, each with pairs sharing 3, 2 and 1 of its rare words."""
  records = []
  for n in range(4):
    words = [f'r{n}a', f'r{n}b', f'r{n}c']
    records += [
        {'input': ' '.join(words), 'output': f'q{n}'},
        {'input': ' '.join(words) + ' filler', 'output': f'three{n}'},
        {'input': ' '.join(words[:2]) + ' filler', 'output': f'two{n}'},
        {'input': words[0] + ' filler', 'output': f'one{n}'},
    ]
  return [dict(r, task='t') for r in records]


def test_similar_puts_the_nearest_last(tok):
  records = _graded_records()
  sampler = samplers.SimilarContext(records, _config(num_context=3))
  for n in range(4):
    ex = sampler(4 * n, np.random.default_rng(0))
    assert [records[j]['output'] for j in ex.sources] == [
        f'one{n}', f'two{n}', f'three{n}']
    assert ex.similar == (True,) * 3 and ex.kind == 'similar'
    # Too long: the least similar go first.
    lengths = [len(tok.encode(u)) for u in ex.context]
    fixed = 1 + len(tok.encode(ex.prompt)) + len(tok.encode(ex.target))
    fitted = context.fit(ex, tok, fixed + lengths[1] + lengths[2])
    assert fitted.kept == (1, 2) and fitted.grade == 2


def test_similar_by_embedding_is_the_cosine_top_k(small):
  sampler = _build('similar_embedding', small)
  vectors = _fake_embed([p['input'] for p in small])
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  for index in range(0, len(small), 7):
    ex = sampler(index, np.random.default_rng(0))
    same = [j for j, p in enumerate(small) if p['task'] == small[index]['task']
            and p['input'] != small[index]['input']]
    cos = {j: float(unit[index] @ unit[j]) for j in same}
    ranked = sorted(same, key=lambda j: (-cos[j], j))  # Ties: lower index.
    assert list(ex.sources) == ranked[:4][::-1]


def test_embedding_similarity_needs_an_embed_function(small):
  sampler = _build('similar_embedding', small, embed=None)  # Builds (validate).
  with pytest.raises(ValueError, match='needs an embed function'):
    sampler(0, np.random.default_rng(0))


def _binomial_ok(count: int, n: int, p: float) -> bool:
  """count within 4.5 standard deviations of n * p."""
  return abs(count - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1e-9


def test_contrastive_grades_follow_the_configured_distribution(small):
  grades = (0.1, 0.2, 0.3, 0.4)
  sampler = samplers.ContrastiveContext(small, _config(grades=grades))
  rng = np.random.default_rng(0)
  counts, positions = collections.Counter(), collections.Counter()
  draws = 4000
  for d in range(draws):
    index = d % len(small)
    ex = sampler(index, rng)
    counts[ex.grade] += 1
    close = [j for j, s in zip(ex.sources, ex.similar) if s]
    assert sorted(close) == sorted(int(j) for j in sampler.nearest[index][:ex.grade])
    if ex.grade == 1:
      positions[ex.similar.index(True)] += 1
  for g, p in enumerate(grades):
    assert _binomial_ok(counts[g], draws, p), (g, counts)
  # The similar slot is anywhere in the context, not always next to the target.
  for position in range(4):
    assert _binomial_ok(positions[position], counts[1], 0.25), positions


def test_contrastive_near_duplicates_differ_in_one_word_and_the_answer(full):
  sampler = samplers.ContrastiveContext(
      full, _config(grades=(0, 1), near_duplicates=True))
  words = [p['input'].split() for p in full]
  have, draws = 0, 400
  for index in range(draws):
    ex = sampler(index, np.random.default_rng(index))
    (close,) = [j for j, s in zip(ex.sources, ex.similar) if s]
    one_apart = [j for j, p in enumerate(full)
                 if p['task'] == full[index]['task']
                 and p['output'] != full[index]['output']
                 and len(words[j]) == len(words[index])
                 and sum(a != b for a, b in zip(words[j], words[index])) == 1]
    if one_apart:
      have += 1
      assert close in one_apart
    else:  # None: the nearest neighbour.
      assert close == sampler.nearest[index][0]
  assert 0.3 * draws < have < draws  # Both cases occur in the IC-Train pool.


@pytest.mark.parametrize('grades', [(), (1, 0, 0, 0, 0, 1), (0.5, -0.1), (0, 0)])
def test_contrastive_rejects_bad_grades(small, grades):
  with pytest.raises(ValueError, match='data.grades'):
    samplers.ContrastiveContext(small, _config(grades=grades))


def test_mixture_proportions_and_one_index(small, monkeypatch):
  built = []
  original = retrieval.neighbours

  def counting(*args, **kwargs):
    built.append(args[3])
    return original(*args, **kwargs)

  monkeypatch.setattr(retrieval, 'neighbours', counting)
  sampler = samplers.Mixture(small, _config(mixture='random:1, similar:1,contrastive:2'))
  rng = np.random.default_rng(0)
  kinds = collections.Counter(sampler(d % len(small), rng).kind for d in range(4000))
  assert built == ['bm25']  # One neighbour table, shared.
  for kind, p in (('random', 0.25), ('similar', 0.25), ('contrastive', 0.5)):
    assert _binomial_ok(kinds[kind], 4000, p), kinds


@pytest.mark.parametrize('spec, message', [
    ('', 'name:weight'), ('random', 'name:weight'), ('random:0', 'name:weight'),
    ('random:x', 'name:weight'), ('documents:1', 'not an IC-Train sampler'),
    ('mixture:1', 'not an IC-Train sampler'), ('randum:1', "Did you mean 'random'"),
])
def test_mixture_rejects_bad_specs(small, spec, message):
  with pytest.raises(ValueError, match=message):
    samplers.Mixture(small, _config(mixture=spec))


# The context layer -------------------------------------------------------------


def test_fit_equals_tokenizing_the_whole_prompt(small, tok):
  sampler = _build('contrastive', small)
  for index in range(0, len(small), 5):
    ex = sampler(index, np.random.default_rng(index))
    fitted = context.fit(ex, tok, 1000)
    want = ([tok.bos_id] + tok.encode(''.join(ex.context) + ex.prompt)
            + tok.encode(ex.target))
    assert fitted.tokens.tolist() == want
    n = len(tok.encode(ex.target))
    assert fitted.loss_mask.tolist() == [0] * (len(want) - n) + [1] * n
    assert fitted.kept == (0, 1, 2, 3) and fitted.grade == ex.grade


def test_too_long_loses_random_examples_first_never_the_target(tok):
  units = tuple(f'Input: w{i} w{i}\nOutput: o{i}\n' for i in range(4))
  ex = context.Example(context=units, prompt='Input: q\nOutput:',
                       target=' answer\n', similar=(False, True, False, True))
  lengths = [len(tok.encode(u)) for u in units]
  prompt, target = tok.encode(ex.prompt), tok.encode(ex.target)
  fixed = 1 + len(prompt) + len(target)
  for budget, kept in [(fixed + sum(lengths), (0, 1, 2, 3)),
                       (fixed + sum(lengths) - 1, (1, 2, 3)),
                       (fixed + lengths[1] + lengths[3], (1, 3)),
                       (fixed + lengths[3], (3,)), (fixed, ())]:
    fitted = context.fit(ex, tok, budget)
    assert fitted.kept == kept and fitted.grade == sum(ex.similar[i] for i in kept)
    assert len(fitted.tokens) <= budget
    assert fitted.tokens.tolist() == [tok.bos_id, *(
        t for i in kept for t in tok.encode(units[i])), *prompt, *target]
    assert fitted.tokens[fitted.loss_mask == 1].tolist() == target
  with pytest.raises(context.TooLongError, match='more than the budget'):
    context.fit(ex, tok, fixed - 1)
  with pytest.raises(context.TooLongError):  # A document is all target.
    context.fit(context.Example(target='one two three four'), tok, 3)


def test_keep_drops_least_similar_oldest_first_and_no_more_than_needed():
  rng = np.random.default_rng(0)
  for _ in range(500):
    n = int(rng.integers(0, 7))
    lengths = rng.integers(1, 20, n).tolist()
    similar = (rng.random(n) < 0.4).tolist()
    fixed = int(rng.integers(1, 10))
    budget = int(rng.integers(fixed, fixed + sum(lengths) + 2))
    kept = context.keep(lengths, fixed, budget, similar)
    dropped = [i for i in range(n) if i not in kept]
    assert fixed + sum(lengths[i] for i in kept) <= budget
    rank = lambda i: (similar[i], i)  # noqa: E731
    assert all(rank(d) < rank(k) for d in dropped for k in kept)
    if dropped:  # The last one dropped would not have fit.
      last = max(dropped, key=rank)
      assert fixed + sum(lengths[i] for i in kept) + lengths[last] > budget


def test_pipeline_rows_hold_whole_targets_and_resume_exactly(small, tok):
  sampler = _build('contrastive', small)
  targets = {tuple(tok.encode(schema.render_answer(p['output']))) for p in small}
  seq_len = 40  # Most examples lose context examples.
  assert pipeline.check_lengths(sampler, tok, seq_len) > len(small) // 2
  it = iter(pipeline.batches(sampler, tok, seq_len, global_batch=4, seed=3))
  for _ in range(3):
    batch = next(it)
    for row in range(4):
      segments = batch['segment_ids'][row]
      for s in set(segments.tolist()) - {0}:
        where = segments == s
        tokens, mask = batch['tokens'][row][where], batch['loss_mask'][row][where]
        assert tokens[0] == tok.bos_id
        n = int(mask.sum())
        assert mask[-n:].all() and tuple(tokens[-n:]) in targets
  state = it.get_state()
  after = [next(it) for _ in range(2)]
  again = iter(pipeline.batches(sampler, tok, seq_len, global_batch=4, seed=3))
  again.set_state(state)
  for want in after:
    got = next(again)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  with pytest.raises(pipeline.TooLongError, match='raise train.seq_len to at least'):
    pipeline.check_lengths(sampler, tok, 8)


# Retrieval -------------------------------------------------------------------


def test_neighbours_stay_in_group_skip_copies_and_break_ties_low():
  texts = ['a b', 'a b', 'a c', 'a d', 'x y', 'a b', 'zz']
  groups = [0, 0, 0, 0, 0, 1, 1]
  near = retrieval.neighbours(texts, groups, k=3)
  # 'a c' and 'a d' tie for 'a b' (copies excluded): the lower index first;
  # 'x y' scores 0, still a neighbour; group 1 has one other text.
  assert near[0].tolist() == [2, 3, 4] and near[1].tolist() == [2, 3, 4]
  assert near[5].tolist() == [6, -1, -1]
  for i in range(len(texts)):
    assert i not in near[i]
    assert all(groups[j] == groups[i] and texts[j] != texts[i] for j in near[i] if j >= 0)
  with pytest.raises(ValueError, match='Unknown similarity'):
    retrieval.neighbours(texts, groups, 2, similarity='bm26')


def test_importing_the_data_layer_leaves_the_xla_backend_alone():
  """jax.distributed.initialize must run before the backend starts (bm25s
  runs a jax computation when imported)."""
  code = ('from jax._src import xla_bridge\n'
          'from icl_iwl.data import pipeline, retrieval, samplers\n'
          'assert not xla_bridge.backends_are_initialized()\n')
  subprocess.run([sys.executable, '-c', code], check=True,
                 cwd=pathlib.Path(__file__).resolve().parents[1])


def test_near_duplicates_are_one_word_apart():
  rng = np.random.default_rng(0)
  texts = [' '.join(rng.choice(list('abc'), int(rng.integers(1, 4))))
           for _ in range(60)]
  groups = rng.integers(0, 2, len(texts)).tolist()
  near = retrieval.near_duplicates(texts, groups)
  for i, a in enumerate(texts):
    want = [j for j, b in enumerate(texts) if groups[j] == groups[i]
            and len(a.split()) == len(b.split())
            and sum(x != y for x, y in zip(a.split(), b.split())) == 1]
    assert near[i] == want


def test_embeddings_are_cached_on_disk(tmp_path):
  calls = []

  def embed(texts):
    calls.append(list(texts))
    return _fake_embed(texts)

  cached = retrieval.cached(embed, 'embedded|gemma3_270m|float32', tmp_path)
  first = cached(['a b', 'c'])
  np.testing.assert_array_equal(cached(['a b', 'c']), first)
  assert calls == [['a b', 'c']]
  files = list(tmp_path.iterdir())
  assert len(files) == 1 and files[0].name.startswith('embedded_gemma3_270m_float32-')
  cached(['a', 'b c'])  # Other texts (same characters): another file.
  retrieval.cached(embed, 'other', tmp_path)(['a b', 'c'])  # Another model.
  assert len(calls) == 3 and len(list(tmp_path.iterdir())) == 3
  files[0].write_bytes(b'not numpy')  # A damaged file is recomputed.
  np.testing.assert_array_equal(cached(['a b', 'c']), first)
  assert len(calls) == 4 and not list(tmp_path.glob('.*.tmp'))


def test_model_embedder_mean_pools_each_text_alone(tok):
  model = gemma.Transformer(presets.get('tiny'))
  params = gemma.init_params(model, jax.random.key(0))
  texts = ['the red dog', 'Input: a much longer text than the others, with '
           'enough tokens to need the next padded length', '', 'cat']
  got = embedding.model_embedder(model, params, tok, batch_size=2)(texts)
  assert got.shape == (4, presets.get('tiny').embed_dim)
  apply = jax.jit(functools.partial(model.apply, return_hidden=True))
  for text, vector in zip(texts, got):
    ids = tok.encode(text, add_bos=True)
    n = len(ids)
    hidden, _ = apply({'params': params}, np.asarray([ids]), np.arange(n)[None],
                      np.tril(np.ones((n, n), bool))[None])
    want = np.asarray(hidden[0, 1:]).mean(0) if n > 1 else np.zeros_like(vector)
    np.testing.assert_allclose(vector, want, atol=1e-5)
  assert embedding.model_key(
      ml_collections.ConfigDict(dict(checkpoint='random', preset='tiny',
                                     dtype='float32')), 3) == 'random|tiny|float32|seed=3'
