"""icl_iwl.augment.coverage: which probes the augmented data answers."""

import json

from icl_iwl.augment import checkers
from icl_iwl.augment import coverage
from icl_iwl.data.builders import reversal_curse


def test_a_fact_is_newly_stated_only_in_a_kind_the_originals_lack():
  people = reversal_curse.make_people(reversal_curse.SMALL)
  d2p = [p for p in people if p.group == 'd2p']
  checker = checkers.for_dataset('reversal_curse', 'small')
  described = lambda p: p.description[0].upper() + p.description[1:]  # noqa: E731
  original = [f'{described(p)} is {p.name}.' for p in d2p]  # Description first.
  augmented = [
      f'{d2p[0].name} is {d2p[0].description}.',        # Reversed: new.
      f'{described(d2p[1])} is {d2p[1].name}.',          # As trained: not new.
      f'{d2p[2].name} is {d2p[3].description}.',         # False: not counted.
  ]
  assert coverage.newly_stated(checker, original, augmented) == {d2p[0].id}


def test_rows_count_right_answers_among_covered_probes_and_the_rest(tmp_path):
  run = tmp_path / 'aug_s0'
  (run / 'items' / 'step10').mkdir(parents=True)
  (run / 'items' / 'step20').mkdir(parents=True)
  (run / 'done.json').write_text('{}')
  lines = [('p1', True), ('p2', False), ('p3', True), ('p4', True)]
  (run / 'items' / 'step20' / 'test_x.jsonl').write_text(''.join(
      json.dumps({'id': i, 'correct_sum': c}) + '\n' for i, c in lines))
  (run / 'items' / 'step10' / 'test_x.jsonl').write_text('')  # Not the last.
  (tmp_path / 'unfinished' / 'items' / 'step5').mkdir(parents=True)
  facts = {'p1': ['f1'], 'p2': ['f2'], 'p3': ['f3'], 'p4': ['f1', 'f4']}
  got = coverage.rows(sorted(tmp_path.iterdir()), facts, covered={'f1', 'f2'})
  assert got == [{'run': 'aug_s0', 'split': 'test_x', 'covered': '2/3', 'other': '1/1'}]
