"""Syllogistic logic (non-empty terms) and the syllogisms dataset."""

import collections

import pytest

from icl_iwl.data.builders import syllogisms as syl

S = syl.Statement
T, F, U = syl.TRUE, syl.FALSE, syl.UNDETERMINED


@pytest.mark.parametrize('premises, conclusion, want', [
    # Barbara, Celarent, Darii, Ferio (figure 1): M-P, S-M |- S-P.
    ([S('all', 'M', 'P'), S('all', 'S', 'M')], S('all', 'S', 'P'), T),
    ([S('no', 'M', 'P'), S('all', 'S', 'M')], S('no', 'S', 'P'), T),
    ([S('all', 'M', 'P'), S('some', 'S', 'M')], S('some', 'S', 'P'), T),
    ([S('no', 'M', 'P'), S('some', 'S', 'M')], S('some', 'S', 'P'), U),
    # Existential import: Barbari and Darapti hold only with non-empty terms.
    ([S('all', 'M', 'P'), S('all', 'S', 'M')], S('some', 'S', 'P'), T),
    ([S('all', 'M', 'P'), S('all', 'M', 'S')], S('some', 'S', 'P'), T),
    ([S('all', 'M', 'P'), S('all', 'S', 'M')], S('no', 'S', 'P'), F),
    # Conversion: 'no' and 'some' are symmetric, 'all' is not.
    ([S('no', 'M', 'P'), S('all', 'S', 'M')], S('no', 'P', 'S'), T),
    ([S('all', 'M', 'P'), S('all', 'S', 'M')], S('all', 'P', 'S'), U),
    ([S('all', 'M', 'P'), S('all', 'S', 'M')], S('some', 'P', 'S'), T),
    # Undistributed middle: nothing follows.
    ([S('all', 'P', 'M'), S('all', 'S', 'M')], S('all', 'S', 'P'), U),
    ([S('all', 'P', 'M'), S('all', 'S', 'M')], S('some', 'S', 'P'), U),
    ([S('all', 'P', 'M'), S('all', 'S', 'M')], S('no', 'S', 'P'), U),
    # Two negative premises: nothing follows.
    ([S('no', 'M', 'P'), S('no', 'S', 'M')], S('no', 'S', 'P'), U),
    # Camestres: P-M, S-M with 'all' and 'no'.
    ([S('all', 'P', 'M'), S('no', 'S', 'M')], S('no', 'S', 'P'), T),
    ([S('all', 'P', 'M'), S('no', 'S', 'M')], S('some', 'P', 'S'), F),
    # A false 'all' from a particular premise: some S are M, no M are P.
    ([S('no', 'M', 'P'), S('some', 'S', 'M')], S('all', 'S', 'P'), F),
])
def test_truth(premises, conclusion, want):
  assert syl.truth(premises, conclusion) == want


def test_truth_table_of_the_classic_example():
  # "All A are C. All B are A." about (B, C): all/some/no x BC/CB.
  premises = (S('all', 'A', 'C'), S('all', 'B', 'A'))
  got = [syl.truth(premises, c) for c in syl.candidates()]
  assert got == [T, U, T, T, F, F]


def test_inconsistent_premises_fail():
  with pytest.raises(ValueError, match='Inconsistent'):
    syl.truth([S('all', 'A', 'B'), S('no', 'A', 'B')], S('all', 'A', 'A'))


def test_premise_forms_and_their_valid_conclusions():
  forms = syl.premise_forms()
  got = {' '.join(p.label for p in premises): c.label for premises, c in forms}
  assert got == {
      'all(AC) all(BA)': 'all(BC)',   # Barbara
      'no(AC) all(BA)': 'no(BC)',     # Celarent
      'all(AC) some(BA)': 'some(BC)',  # Darii
      'no(CA) all(BA)': 'no(BC)',     # Cesare
      'all(CA) no(BA)': 'no(BC)',     # Camestres
      'all(AC) all(AB)': 'some(BC)',  # Darapti
      'some(AC) all(AB)': 'some(BC)',  # Disamis
      'all(AC) some(AB)': 'some(BC)',  # Datisi
      'all(CA) no(AB)': 'no(BC)',     # Camenes
      'some(CA) all(AB)': 'some(BC)',  # Dimaris
  }
  # Each is true, and no true statement is stronger.
  for premises, c in forms:
    values = {x.label: syl.truth(premises, x) for x in syl.candidates()}
    assert values[c.label] == T
    if c.quantifier != 'all':
      assert values['all(BC)'] != T and values['all(CB)'] != T


def test_bramantip_is_left_out_as_barbara_swapped():
  premises = (S('all', 'C', 'A'), S('all', 'A', 'B'))
  assert syl.truth(premises, S('all', 'C', 'B')) == T
  assert syl.conclusion(premises) is None


@pytest.fixture(scope='module')
def small():
  return syl.generate(syl.SMALL)


@pytest.fixture(scope='module')
def full():
  return syl.generate(syl.FULL)


def _statement(choice: str) -> tuple[str, str, str]:
  """' All glon are yomp.' -> ('all', 'glon', 'yomp')."""
  q, subject, _, predicate = choice.strip(' .').split()
  return q.lower(), subject, predicate


def _pair(prompt: str) -> tuple[str, str]:
  first, _, second = prompt.removeprefix(
      'The relationships between ').removesuffix(' are:').split()
  return first, second


def _shape(record: dict) -> tuple[str, bool]:
  """The correct choice's quantifier, and whether the prompt names its
  subject first."""
  q, subject, _ = _statement(record['choices'][record['answer']])
  return q, subject == _pair(record['prompt'])[0]


@pytest.mark.parametrize('split', ['test_conclusion', 'test_control'])
def test_a_fixed_quantifier_and_order_preference_scores_one_sixth(
    small, full, split):
  """A scorer that ranks statements by quantifier and word order only.

  Every record offers all six shapes (test below), so such a scorer (say
  some > no > all, subject named first) picks the same shape everywhere and
  scores the share of records whose answer has that shape: 1/6 for each.
  """
  for splits in (small, full):
    shapes = collections.Counter(_shape(r) for r in splits[split])
    assert len(shapes) == 6, shapes
    assert set(shapes.values()) == {len(splits[split]) // 6}, shapes


def test_conclusions_are_valid_and_strongest(full):
  docs = {d['id']: d['text'] for d in full['train']}
  kinds = collections.Counter()
  for r in full['test_conclusion']:
    kinds[r['kind']] += 1
    # Rebuild the premises from the document: 'All x are y. No z are x.'
    premises_text = docs[r['facts'][0]].split(' are: ')[1]
    premises = [_statement(p) for p in premises_text.split('. ')]
    pair = set(_pair(r['prompt']))
    (middle,) = {t for _, s, p in premises for t in (s, p)} - pair
    # The minor premise, second, holds the subject B.
    (subject,) = {premises[1][1], premises[1][2]} - {middle}
    (predicate,) = pair - {subject}
    symbol = {middle: 'A', subject: 'B', predicate: 'C'}
    stated = [S(q, symbol[s], symbol[p]) for q, s, p in premises]
    assert ' '.join(p.label for p in stated) == r['kind']
    values = {}
    for i, choice in enumerate(r['choices']):
      q, s, p = _statement(choice)
      values[i] = syl.truth(stated, S(q, symbol[s], symbol[p]))
    assert values[r['answer']] == T
    q, s, _ = _statement(r['choices'][r['answer']])
    assert symbol[s] == 'B'
    if q != 'all':  # Only the converse is also true (and no 'all').
      assert list(values.values()).count(T) == 2
  assert len(kinds) == 10


def test_control_pairs_are_never_related(full):
  docs = [d['text'] for d in full['train']]
  conclusions = {r['id'].removeprefix('conclusion-'): r
                 for r in full['test_conclusion']}
  for r in full['test_control']:
    a, b = _pair(r['prompt'])
    assert not any(a in d and b in d for d in docs)
    twin = conclusions[r['id'].removeprefix('control-')]
    assert r['kind'] == twin['kind']
    assert _shape(r) == _shape(twin)


def test_every_record_offers_the_six_statements(small):
  for split in ('test_conclusion', 'test_control'):
    for r in small[split]:
      a, b = _pair(r['prompt'])
      got = {_statement(c) for c in r['choices']}
      assert got == {(q, s, p) for q in syl.QUANTIFIERS
                     for s, p in ((a, b), (b, a))}


def test_documents_state_the_premises_of_their_form(small):
  for doc in small['train']:
    intro, _, premises = doc['text'].partition(' are: ')
    assert intro.startswith('The relationships between ')
    assert premises.count('.') == 2


def test_num_items_must_balance():
  with pytest.raises(ValueError, match='multiple of 6'):
    syl.make_items(syl.SyllogismsConfig(name='x', num_items=10))
