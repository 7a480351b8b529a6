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


def test_premise_forms_have_a_true_and_a_false_candidate():
  forms = syl.premise_forms()
  assert len(forms) == 11  # Of 36 (3 quantifiers x 2 orders, per premise).
  for premises in forms:
    values = {syl.truth(premises, c) for c in syl.candidates()}
    assert {T, F} <= values
  quantifiers = {p.quantifier for form in forms for p in form}
  assert quantifiers == {'all', 'some', 'no'}


@pytest.fixture(scope='module')
def small():
  return syl.generate(syl.SMALL)


def test_statements_carry_their_truth(small):
  by_item = collections.defaultdict(list)
  for r in small['test_statements']:
    by_item[r['facts'][0]].append(r)
  assert len(by_item) == syl.SMALL.num_items
  for records in by_item.values():
    assert len(records) == 6
    assert {r['kind'] for r in records} >= {T, F}
    assert len({r['choices'][0] for r in records}) == 6


def test_mc_pairs_a_true_with_a_false_statement(small):
  truth = {(r['prompt'], r['choices'][0]): r['kind']
           for r in small['test_statements']}
  assert small['test_mc']
  for r in small['test_mc']:
    correct = r['choices'][r['answer']]
    wrong = r['choices'][1 - r['answer']]
    assert truth[(r['prompt'], correct)] == T
    assert truth[(r['prompt'], wrong)] == F


def test_documents_state_the_premises_of_their_form(small):
  for doc in small['train']:
    intro, _, premises = doc['text'].partition(' are: ')
    assert intro.startswith('The relationships between ')
    assert premises.count('.') == 2
