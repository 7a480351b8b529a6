"""The dataset generators without TFDS: sizes, determinism, schema, leakage."""

import collections
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from icl_iwl.data import schema
from icl_iwl.data import tokenizer
from icl_iwl.data import words
from icl_iwl.data.builders import ictrain
from icl_iwl.data.builders import reversal_curse
from icl_iwl.data.builders import reversals
from icl_iwl.data.builders import semantic
from icl_iwl.data.builders import semantic_world
from icl_iwl.data.builders import syllogisms

MODULES = {
    'reversals': reversals,
    'syllogisms': syllogisms,
    'reversal_curse': reversal_curse,
    'semantic': semantic,
    'ictrain': ictrain,
}
# Probe splits about generalization: never stated verbatim in training.
GENERALIZATION_SPLITS = {
    'reversals': ['test_reversal'],
    'syllogisms': ['test_conclusion', 'test_control'],
    'reversal_curse': ['test_p2d_reverse', 'test_d2p_reverse'],
    'semantic': ['test_reversal', 'test_syllogism', 'test_deduction',
                 'test_holdout'],
}


@pytest.fixture(scope='module')
def tok():
  return tokenizer.load_default()


@pytest.fixture(scope='module')
def full():
  return {name: m.generate(m.FULL) for name, m in MODULES.items()}


@pytest.fixture(scope='module')
def small():
  return {name: m.generate(m.SMALL) for name, m in MODULES.items()}


def digest(splits: dict) -> str:
  return hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()


def kind_of(name: str, split: str) -> schema.RecordKind:
  if name == 'ictrain':
    return schema.PAIR if split == 'train' else schema.IC_PROBE
  return schema.DOCUMENT if split == 'train' else schema.MC


def leaks(train: list[dict], probes: list[dict]) -> list[str]:
  """Probe statements (prompt + correct choice) found verbatim in training."""
  corpus = '\n'.join(schema.normalize(d['text']) for d in train)
  found = []
  for p in probes:
    statement = schema.normalize(p['prompt'] + p['choices'][p['answer']])
    if statement in corpus:
      found.append(statement)
  return found


def test_full_sizes(full):
  counts = {name: {k: len(v) for k, v in s.items()} for name, s in full.items()}
  assert counts['reversals'] == {
      'train': 1000, 'test_reversal': 100, 'test_forward': 100}
  assert counts['syllogisms'] == {
      'train': 72, 'test_conclusion': 72, 'test_control': 72}
  assert counts['reversal_curse'] == {
      'train': 1500, 'test_p2d_reverse': 50, 'test_p2d_same': 50,
      'test_d2p_reverse': 50, 'test_d2p_same': 50, 'test_both_name': 50,
      'test_both_description': 50}
  assert counts['semantic']['train'] == 2000
  for split in ('test_rephrase', 'test_reversal', 'test_syllogism',
                'test_deduction', 'test_holdout'):
    assert counts['semantic'][split] >= 40, split
  assert counts['ictrain'] == {
      'train': 6000, 'test_iwl': 200, 'test_icl': 200, 'test_copy': 200}


def test_full_reversals_shape(full):
  docs = full['reversals']['train']
  per_fact = collections.Counter(d['facts'][0] for d in docs)
  assert len(per_fact) == 100 and set(per_fact.values()) == {10}
  relations = {re.search(r' are (.*) than ', d['text'].split('. ')[-1]).group(1)
               for d in docs}
  assert len(relations) == 2 * 28  # Both words of every relation.
  # Preambles vary: the ten documents of a fact are all different.
  assert len({d['text'] for d in docs}) == 1000


def _relation_word(choice: str) -> str:
  """' less dangerous than femp.' or ' less dangerous.' -> 'less dangerous'."""
  return choice.strip(' .').split(' than ')[0]


def test_reversals_word_preference_scores_half(full, small):
  """A scorer that prefers one word of each relation pair is at chance.

  It knows no fact: per relation, it picks the choice with its preferred
  word. Every such preference scores exactly 0.5 iff each word of every
  relation is the right answer as often as the other.
  """
  index = {w: (pair, i) for pair in reversals.RELATIONS
           for i, w in enumerate(pair)}
  for splits in (full, small):
    for split in ('test_reversal', 'test_forward'):
      right = collections.Counter()
      for r in splits['reversals'][split]:
        words = [_relation_word(c) for c in r['choices']]
        assert {index[w][0] for w in words} == {index[words[0]][0]}
        right[index[words[r['answer']]]] += 1
      for pair in {pair for pair, _ in right}:
        assert right[pair, 0] == right[pair, 1] > 0, (split, pair)
      first_word = sum(v for (_, i), v in right.items() if i == 0)
      assert first_word / sum(right.values()) == 0.5


def test_full_semantic_shape(full):
  cats = semantic.FULL.level_sizes
  assert sum(cats) == 110 and len(cats) >= 3
  for doc in full['semantic']['train']:
    assert 4 <= doc['text'].count('.') <= 20, doc['text']
  kinds = {p['kind'] for p in full['semantic']['test_deduction']}
  assert any(k.endswith('3hop') for k in kinds)


def test_full_probes_have_all_choices(full):
  want = {'reversals': 2, 'syllogisms': 6, 'reversal_curse': 4, 'semantic': 4,
          'ictrain': 4}
  for name, n in want.items():
    for split, records in full[name].items():
      if split != 'train':
        assert {len(r['choices']) for r in records} == {n}, (name, split)


def test_schema(small, full):
  for splits_by_name in (small, full):
    for name, splits in splits_by_name.items():
      for split, records in splits.items():
        kind = kind_of(name, split)
        ids = [r['id'] for r in records]
        assert len(set(ids)) == len(ids), (name, split)
        for r in records:
          assert schema.problem(r, kind) is None, (name, split, r)
          assert set(r) == set(kind.fields), (name, split, r)
          if kind in (schema.MC, schema.IC_PROBE):
            assert r['prompt'] == r['prompt'].rstrip()
            assert len(set(r['choices'])) == len(r['choices'])
            assert r['facts']


def test_answers_are_spread(full):
  for name, splits in full.items():
    for split, records in splits.items():
      n = {len(r['choices']) for r in records if r.get('choices')}
      if split != 'train' and n != {1}:
        answers = {r['answer'] for r in records}
        assert answers == set(range(max(n))), (name, split)


def test_deterministic_and_seeded(small):
  for name, module in MODULES.items():
    assert digest(module.generate(module.SMALL)) == digest(small[name]), name
    other = type(module.SMALL)(**{**vars(module.SMALL), 'seed': 1})
    assert digest(module.generate(other)) != digest(small[name]), name


def test_deterministic_across_processes(small):
  """Same records under another hash seed (no set or dict-order leaks)."""
  code = (
      'import hashlib, json\n'
      'from icl_iwl.data.builders import reversals, syllogisms, '
      'reversal_curse, semantic, ictrain\n'
      'for m in (reversals, syllogisms, reversal_curse, semantic, ictrain):\n'
      '  s = json.dumps(m.generate(m.SMALL), sort_keys=True).encode()\n'
      '  print(hashlib.sha256(s).hexdigest())\n')
  env = dict(os.environ, PYTHONHASHSEED='12345')
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out == [digest(small[n]) for n in MODULES]


def test_no_generalization_probe_in_training(full, small):
  for splits_by_name in (full, small):
    for name, splits in GENERALIZATION_SPLITS.items():
      for split in splits:
        splits_ = splits_by_name[name]
        assert not leaks(splits_['train'], splits_[split]), (name, split)


def test_syllogism_conclusions_never_stated(full):
  corpus = ' '.join(d['text'] for d in full['syllogisms']['train'])
  for r in full['syllogisms']['test_conclusion']:
    assert r['choices'][r['answer']].strip() not in corpus


def test_leak_check_can_fail(full):
  splits = full['reversals']
  probe = splits['test_reversal'][0]
  statement = probe['prompt'] + probe['choices'][probe['answer']]
  planted = {'text': 'Filler. ' + statement}
  assert leaks(splits['train'] + [planted], [probe])


def test_trained_direction_is_stated(full):
  # The ceiling probes' facts are in training; reversals are not.
  docs = ' '.join(d['text'] for d in full['reversal_curse']['train'])
  for r in full['reversal_curse']['test_p2d_same']:
    assert r['prompt'].removesuffix(' is known as') in docs
    assert r['choices'][r['answer']].strip(' .') in docs


def test_reversal_curse_orders_per_group(full):
  """p2d documents put the name first, d2p the description, both: half each."""
  people = {p.id: p for p in reversal_curse.make_people(reversal_curse.FULL)}
  orders = collections.defaultdict(collections.Counter)
  for doc in full['reversal_curse']['train']:
    person = people[doc['facts'][0]]
    name_first = doc['text'].index(person.name) < doc['text'].index(
        person.description)
    orders[person.group][name_first] += 1
  assert orders['p2d'] == {True: 500}
  assert orders['d2p'] == {False: 500}
  assert orders['both'] == {True: 250, False: 250}


def test_reversal_curse_names(tok):
  for names in ('realistic', 'nonsense'):
    config = dataclasses.replace(reversal_curse.SMALL, names=names)
    people = reversal_curse.make_people(config)
    parts = [p.name.split() for p in people]
    assert all(len(x) == 2 and all(w.isalpha() and w.istitle() for w in x)
               for x in parts)
    for i in (0, 1):  # No two people share a first or a last name.
      assert len({x[i] for x in parts}) == len(people)
    nonsense = all(words.namespace_of(w.lower()) == 'reversal_curse'
                   for x in parts for w in x)
    assert nonsense == (names == 'nonsense')
  # Realistic names are common English names: most first names are one
  # Gemma piece with a leading space; generated ones never are.
  realistic = reversal_curse.make_names(reversal_curse.FULL, 150)
  single = [n for n in realistic if len(tok.encode(' ' + n.split()[0])) == 1]
  assert len(single) > len(realistic) / 2
  with pytest.raises(ValueError, match='realistic'):
    reversal_curse.make_names(
        dataclasses.replace(reversal_curse.SMALL, names='fancy'), 3)


def test_semantic_holdouts_only_trained_in_hierarchy(full):
  holdout = {p['prompt'].split()[0] for p in full['semantic']['test_holdout']}
  assert len(holdout) >= 5
  for doc in full['semantic']['train']:
    for fact in doc['facts']:
      for x in holdout & set(fact.split(':')):
        assert fact == f'isa:{x}', fact


def test_semantic_words_are_nonsense(full):
  """Categories, property words and relation verbs are all nonsense words."""
  splits = full['semantic']
  frames = {f.split()[0] for f in semantic_world.FRAMES}
  content = set()
  for r in splits['test_rephrase']:
    if r['kind'] == 'relation':  # 'Field notes confirm that femp glorp'
      content.add(r['prompt'].split()[-1])
    for choice in r['choices']:
      *frame, word = choice.strip(' .').split()
      if r['kind'] == 'property':
        assert frame and frame[0] in frames, choice
      content.add(word)
  assert len(content) > 400
  for word in content:
    assert words.namespace_of(word) == 'semantic' and not words.is_english(word)


def test_semantic_properties_per_category(full):
  owned = collections.defaultdict(set)
  for doc in full['semantic']['train']:
    for fact in doc['facts']:
      if fact.startswith('prop:'):
        owned[fact.split(':')[1]].add(fact)
  counts = collections.Counter(len(v) for v in owned.values())
  assert set(counts) == set(range(1, semantic.FULL.max_properties + 1))


def test_semantic_reversals_are_never_stated_that_way(full):
  """Inclusion, properties and relations are reversed, and every training
  sentence names the answer before the prompt's category or property word."""
  splits = full['semantic']
  sentences = [re.findall(r'\w+', s) for d in splits['train']
               for s in d['text'].split('. ')]
  kinds = collections.Counter()
  for r in splits['test_reversal']:
    kinds[r['kind']] += 1
    answer = r['choices'][r['answer']].strip(' .')
    cue = {'isa': lambda p: p.split()[2], 'property': lambda p: p.split()[-2],
           'relation': lambda p: p.split()[0]}[r['kind']](r['prompt'])
    together = [s for s in sentences if answer in s and cue in s]
    assert together, r
    for sentence in together:
      assert sentence.index(answer) < sentence.index(cue), (r, sentence)
  assert set(kinds) == {'isa', 'property', 'relation'}


def test_semantic_documents_fit_a_sequence(full, tok):
  lengths = [len(tok.encode(d['text'])) for d in full['semantic']['train']]
  assert max(lengths) <= 250


def test_semantic_distractors_are_hard(full):
  """Wrong choices are mostly facts that other categories hold."""
  corpus = ' '.join(d['text'] for d in full['semantic']['train'])
  for split in ('test_rephrase', 'test_syllogism', 'test_deduction'):
    probes = [p for p in full['semantic'][split] if p['kind'] != 'isa']
    hard = 0
    for p in probes:
      verb = p['prompt'].split()[-1]
      for i, choice in enumerate(p['choices']):
        if i != p['answer']:
          relation = p['kind'].startswith('relation')
          stated = f'{verb}{choice}' if relation else choice
          hard += stated in corpus
    assert hard >= 0.9 * len(probes) * (semantic.FULL.num_choices - 1), split
