"""The audit's knowledge-base checkers, on the datasets' own sentences and on
hand-written ones built from each knowledge base."""

import importlib.util
import pathlib
import re

import pytest

from icl_iwl.augment import audit
from icl_iwl.augment import checkers
from icl_iwl.augment import split
from icl_iwl.data.builders import reversal_curse
from icl_iwl.data.builders import reversals
from icl_iwl.data.builders import semantic
from icl_iwl.data.builders import semantic_world as sw
from icl_iwl.data.builders import syllogisms

_MODULES = {'reversals': reversals, 'reversal_curse': reversal_curse,
            'syllogisms': syllogisms, 'semantic': semantic}


def _label(checker, sentence: str) -> tuple[str, str]:
  claim = audit.classify(checker, sentence)
  return claim.label, claim.kind


@pytest.mark.parametrize('name', sorted(_MODULES))
@pytest.mark.parametrize('size', ['small', 'full'])
def test_training_sentences_are_true_or_state_nothing(name, size):
  checker = checkers.for_dataset(name, size)
  module = _MODULES[name]
  data = module.generate(getattr(module, size.upper()))
  for doc in data['train']:
    labels = [_label(checker, s)[0] for s in split.sentences(doc['text'])]
    assert set(labels) <= {'true', 'none'}, doc
    assert 'true' in labels or name == 'reversal_curse', doc
  if name == 'syllogisms':
    for probe in data['test_control']:  # Terms of two items: nothing follows.
      assert {_label(checker, probe['prompt'] + c)[0]
              for c in probe['choices']} == {'undetermined'}
    for probe in data['test_conclusion']:
      assert _label(checker, probe['prompt'] + probe['choices'][probe['answer']]
                    )[0] == 'true'
    return
  for split_name, probes in data.items():  # Right choices true, wrong false.
    for probe in probes if split_name != 'train' else []:
      labels = [_label(checker, probe['prompt'] + c)[0]
                for c in probe['choices']]
      assert labels.pop(probe['answer']) == 'true', probe
      assert set(labels) <= {'false'}, probe


def test_reversals():
  checker = checkers.for_dataset('reversals', 'small')
  f, g = checker.facts[0], checker.facts[2]
  other = next(w for pair in reversals.RELATIONS for w in pair
               if w not in (f.stated, f.converse))
  assert [_label(checker, s) for s in [
      f'{f.b} are {f.converse} than {f.a}.',
      f'{f.b.capitalize()} are {f.stated} than {f.a}.',
      f'Indeed, {f.a} are much {f.stated} than the {f.b}.',
      f'Compared with {f.b}, {f.a} are {f.converse}.',
      f'{f.a} are {other} than {f.b}.',
      f'{f.a} are {f.stated} than {g.b}.',
      f'{f.a} are {f.stated} than {f.a}.',
      'Yesterday, the baker painted the fence.',
  ]] == [('true', 'reverse'), ('false', 'reverse'), ('true', 'forward'),
         ('false', 'forward'), ('undetermined', 'other relation'),
         ('undetermined', 'unrelated'), ('none', '-'), ('none', '-')]


def test_reversal_curse():
  checker = checkers.for_dataset('reversal_curse', 'small')
  people = reversal_curse.make_people(reversal_curse.SMALL)
  p, q = people[0], people[-1]
  core = p.description.split(' ', 2)[2]
  assert [_label(checker, s) for s in [
      f'{p.name} is {p.description}.',
      f'The famous {core} is {p.name}.',
      f'{p.name} is {q.description}.',
      f'{q.description.capitalize()} is none other than {p.name}.',
      f'{p.name} likes tea.',
      f'Everyone admires {core}.',
  ]] == [('true', f'{p.group}, name first'),
         ('true', f'{p.group}, description first'),
         ('false', f'{q.group}, name first'),
         ('false', f'{q.group}, description first'), ('none', '-'),
         ('none', '-')]


def test_syllogisms():
  checker = checkers.for_dataset('syllogisms', 'small')
  items = syllogisms.make_items(syllogisms.SMALL)
  barbara = next(i for i in items if i.kind == 'all(AC) all(BA)')
  a, b, c = (barbara.names[s] for s in 'ABC')
  stranger = next(i for i in items if i is not barbara).names['C']
  assert [_label(checker, s) for s in [
      f'All {b} are {c}.',
      f'Every {b} is a {c}.',
      f'Some {c}s are {b}s.',
      f'No {b} are {c}.',
      f'All {c} are {b}.',
      f'All {a} are {c}.',
      f'Not all {b} are {c}.',
      f'All {b} are {stranger}.',
      f'All {b} are {c}, and no {b} are {c}.',
  ]] == [('true', 'conclusion pair'), ('true', 'conclusion pair'),
         ('true', 'conclusion pair'), ('false', 'conclusion pair'),
         ('undetermined', 'conclusion pair'), ('true', 'premise pair'),
         ('none', '-'), ('undetermined', 'unrelated terms'),
         ('false', 'conclusion pair')]


def test_semantic():
  checker = checkers.for_dataset('semantic', 'small')
  w = checker.world
  x = next(c for c in w.categories
           if w.depth[c] == 2 and w.properties[w.parent[w.parent[c]]])
  parent, grand = w.parent[x], w.parent[w.parent[x]]
  inherited = w.properties[grand][0]
  foreign = next(p for c in w.categories if c not in w.lineage(x)
                 for p in w.properties[c])
  r = next(r for r in w.relations if w.descendants(r.object))
  below = sorted(w.descendants(r.object))[0]
  outsider = next(c for c in w.categories
                  if not w.related(c, r.verb, r.object))
  assert [_label(checker, s) for s in [
      f'{x} are a kind of {parent}.',
      f'It is well known that {x} belong to the {grand}.',
      f'One kind of {parent} is {x}.',
      f'Kinds of {grand} include {x}.',
      f'{parent} are a kind of {x}.',
      f'In general, {x} {inherited.phrase}.',
      f'Those that {inherited.phrase} include {x}.',
      f'All {x} {foreign.phrase}.',
      f'{r.subject} {r.verb} {r.object}.',
      f'{r.object} are {sw.participle(r.verb)} by {r.subject}.',
      f'{r.subject} {r.verb}s {below}.',
      f'{r.object} are {sw.participle(r.verb)} by {outsider}.',
      f'Naturalists continue to study {x}.',
  ]] == [('true', 'isa'), ('true', 'isa inherited'), ('true', 'isa reversed'),
         ('true', 'isa reversed inherited'), ('false', 'isa'),
         ('true', 'property inherited'),
         ('true', 'property reversed inherited'), ('false', 'property'),
         ('true', 'relation'), ('true', 'relation reversed'),
         ('true', 'relation inherited'), ('false', 'relation reversed'),
         ('none', '-')]


def test_the_rebuilt_world_is_the_generated_one():
  data = semantic.generate(semantic.SMALL)
  world = semantic.make_world(semantic.SMALL)[0]
  ids = {sw.isa_id(x) for x in world.categories if world.parent[x]}
  ids |= {sw.property_id(x, p) for x, ps in world.properties.items()
          for p in ps}
  ids |= {sw.relation_id(r) for r in world.relations}
  stated = {f for doc in data['train'] for f in doc['facts']}
  assert stated == ids


def test_rows_count_every_sentence_once_with_its_worst_claim():
  checker = checkers.for_dataset('reversals', 'small')
  f = checker.facts[0]
  texts = [f'{f.b} are {f.converse} than {f.a}. It rained.',
           f'{f.b} are {f.stated} than {f.a}, but {f.a} are {f.stated} than '
           f'{f.b}.']
  rows = {r['kind']: r for r in audit.rows(checker, 'reverse', texts)}
  assert rows['all'] == {'pass': 'reverse', 'kind': 'all', 'sentences': 3,
                         'true': 1, 'false': 1, 'undetermined': 0, 'none': 1,
                         'facts': 1}
  assert rows['reverse']['true'] == rows['reverse']['false'] == 1
  assert list(rows) == ['reverse', 'all']
  assert '| reverse | reverse |' in audit.table(list(rows.values()))


def _templates() -> dict[str, str]:
  path = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'augment.py'
  spec = importlib.util.spec_from_file_location('augment_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.TEMPLATES


def test_templates_use_no_dataset_word_and_no_probe_phrasing():
  vocabulary = set()
  for size in ('small', 'full'):
    for name in _MODULES:
      c = checkers.for_dataset(name, size)
      if name == 'reversals':
        vocabulary |= set(c.fact_of)
      elif name == 'reversal_curse':
        vocabulary |= {w for n in c.by_name for w in n.split()}
      elif name == 'syllogisms':
        vocabulary |= set(c.term)
      else:
        vocabulary |= set(c.world.parent) | set(c.owner) | {
            v for v, _ in c.verb_form.values()}
  probe_phrases = ['Compared with', 'The person known as', 'is known as',
                   'is called', 'Biologists classify', 'Field notes confirm',
                   'Those that', 'include']
  for part in (semantic.REPHRASE_ISA, semantic.REPHRASE_CLAIM,
               semantic.REVERSE_ISA, semantic.REVERSE_PROPERTY,
               reversal_curse.ASK_NAME, reversal_curse.ASK_DESCRIPTION):
    for literal in re.split(r'\{\w+\}', part):  # Their literal parts too.
      if len(literal.split()) >= 2:
        probe_phrases.append(literal.strip())
  for name, template in _templates().items():
    used = {w.lower() for w in re.findall(r'[A-Za-z]+', template)}
    assert not used & vocabulary, name
    for phrase in probe_phrases:
      assert phrase.lower() not in template.lower(), (name, phrase)
