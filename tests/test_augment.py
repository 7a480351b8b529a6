"""Augmentation passes, sentence splitting, the journal and resumable runs.

Generation is a deterministic fake (no model): `oracle` states the true
reversal of a reversals fact and reverses the words of anything else.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl.augment import generate
from icl_iwl.augment import journal as journal_lib
from icl_iwl.augment import passes
from icl_iwl.augment import runner
from icl_iwl.augment import split
from icl_iwl.data import datasets
from icl_iwl.data import schema
from icl_iwl.data.builders import reversal_curse
from icl_iwl.data.builders import reversals
from icl_iwl.data.builders import semantic
from icl_iwl.data.builders import syllogisms
from icl_iwl.data.builders import user

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CONFIG = _ROOT / 'configs' / 'augment.py'
_CONVERSE = {w: v for a, b in reversals.RELATIONS for w, v in ((a, b), (b, a))}
_FACT = re.compile(r'^(\w+) are (.+) than (\w+)\.$')


_OPENINGS = {'Rephrased:': 'As it happens, ', 'Reversed:': '',
             'So:': 'It follows that ', 'Conclusions:': 'Then '}


def oracle_text(request: generate.Request) -> str:
  """A reversals fact's true converse (rephrase: itself), opened by a phrase
  of the template; any other unit's words reversed."""
  unit, label = request.prompt.split('\n')
  m = _FACT.match(unit)
  if not (m and m.group(2) in _CONVERSE):
    return ' ' + ' '.join(reversed(unit.rstrip('.').split())) + '.'
  x, comparative, y = m.groups()
  fact = (f'{x} are {comparative} than {y}.' if label == 'Rephrased:' else
          f'{y} are {_CONVERSE[comparative]} than {x}.')
  return f' {_OPENINGS.get(label, "")}{fact}\nmore'


def _words(text: str) -> int:
  return len(text.split())


class Fake:
  """A Generator whose calls are counted; it fails after `fail_after`."""

  def __init__(self, fail_after: int | None = None, delay: float = 0.0):
    self.calls, self.requests = 0, 0
    self.fail_after, self.delay = fail_after, delay
    self.prefixes: list[set[str]] = []

  def __call__(self, requests, options):
    if self.fail_after is not None and self.calls >= self.fail_after:
      raise RuntimeError('the generator died')
    time.sleep(self.delay)
    self.calls += 1
    self.requests += len(requests)
    self.prefixes.append({r.prefix for r in requests})
    return [oracle_text(r).split(options.stop[0])[0] for r in requests]

  def generator(self) -> generate.Generator:
    return generate.Generator('fake', self, _words)


def _config(arg: str = 'reversals,tiny', **augment) -> config_lib.ConfigDict:
  config = config_lib.load_file(f'{_CONFIG}:{arg}')
  config.augment.update(dict(limit=0, batch_size=4, **augment))
  return config


def _dataset(config, data_dir) -> tuple[list[dict], list[str]]:
  """(records, provenance lines) of the dataset a run wrote."""
  ds = datasets.resolve(f'jsonl/{config.augment.output}', data_dir=data_dir)
  side = pathlib.Path(ds.builder.data_dir).parent / runner.SIDECAR
  provenance = (side / 'provenance.jsonl').read_text().splitlines()
  return ds.records('train'), provenance


# Sentence splitting and units -------------------------------------------------


def test_sentences_split_with_pysbd_and_prefixes_are_exact():
  text = 'Dr. Lee met  Mr. Kim at 3.5 p.m. today.   Was it late? Yes!'
  assert split.sentences(text) == [
      'Dr. Lee met  Mr. Kim at 3.5 p.m. today.', 'Was it late?', 'Yes!']
  prefixes = split.pieces(text, 'cumulative')
  assert prefixes[-1] == text and all(text.startswith(p) for p in prefixes)
  assert prefixes[1] == 'Dr. Lee met  Mr. Kim at 3.5 p.m. today.   Was it late?'
  with pytest.raises(ValueError, match='cumulative'):
    split.pieces(text, 'each')


@pytest.mark.parametrize('module', [reversals, reversal_curse, semantic,
                                    syllogisms])
def test_every_document_is_its_sentences(module):
  for doc in module.generate(module.SMALL)['train']:
    assert ' '.join(split.sentences(doc['text'])) == doc['text']


def test_units_merge_a_repeated_sentence_and_keep_every_source():
  docs = [{'id': 'd1', 'text': 'It rained. femp are taller than glon.',
           'facts': ['f1']},
          {'id': 'd2', 'text': 'It snowed. femp are taller than glon.',
           'facts': ['f1', 'f2']},
          {'id': 'd3', 'text': 'One sentence only.', 'facts': []}]
  units = passes.units(docs, 'sentence', 'independent')
  assert [u.text for u in units] == [
      'It rained.', 'femp are taller than glon.', 'It snowed.',
      'One sentence only.']
  fact = units[1]
  assert (fact.id, fact.sources, fact.facts) == ('d1#s1', ('d1', 'd2'),
                                                 ('f1', 'f2'))
  both = passes.units(docs, 'both', 'independent')
  assert [u.id for u in both if u.text == 'One sentence only.'] == ['d3']
  assert len(both) == len(units) + 2  # d1 and d2 whole; d3 is its sentence.
  cumulative = passes.units(docs[:1], 'sentence', 'cumulative')
  assert [(u.id, u.text) for u in cumulative] == [
      ('d1#p0', 'It rained.'), ('d1#p1', docs[0]['text'])]


# Passes --------------------------------------------------------------------


def _docs(n: int = 30) -> list[dict]:
  return [{'id': f'doc-{i:02d}', 'text': f'Doc {i} says {"x " * (i % 7)}ok.',
           'facts': [f'f{i}']} for i in range(n)]


def test_a_local_pass_shares_the_few_shot_prefix_and_seeds_by_task():
  config = _config(samples=2, temperature=0.7)
  task_list = passes.PASSES.get('reverse')('reverse', config.augment).tasks(
      _docs(3), _docs(3), len)
  template = config.augment.templates.reverse
  before, after = template.split('{text}')
  assert len(task_list) == 6
  for task in task_list:
    assert task.request.prefix == before
    assert task.request.prompt == task.unit.text + after
  assert task_list[0].key == 'reverse/reverse/doc-00#s0/0'
  assert len({t.request.seed for t in task_list}) == 6
  assert task_list[1].request.seed == passes.request_seed(
      0, 'reverse/reverse/doc-00#s0/1')


def test_global_contexts_fit_the_budget_and_every_target_is_in_its_context():
  config = _config(context_budget=40)
  the_pass = passes.PASSES.get('global')('global', config.augment)
  docs = _docs()
  count = _words
  groups = the_pass.contexts(docs, count)
  assert sorted(d['id'] for g in groups for d in g) == [d['id'] for d in docs]
  assert all(sum(count(d['text'] + '\n') for d in g) <= 40 for g in groups)
  assert len(groups) > 2
  task_list = the_pass.tasks(docs[:10], docs, count)
  assert [t.unit.id for t in task_list] != sorted(t.unit.id for t in task_list)
  assert sorted(t.unit.id for t in task_list) == [d['id'] for d in docs[:10]]
  prefixes = [t.request.prefix for t in task_list]
  for task in task_list:
    assert f'\n{task.unit.text}\n' in task.request.prefix
  # Tasks that share a context are adjacent, so a batch shares its prefix.
  changes = sum(1 for a, b in zip([None] + prefixes, prefixes) if a != b)
  assert len(set(prefixes)) == changes


def test_outputs_keep_complete_sentences_and_drop_a_copy_of_the_unit():
  unit = passes.Unit('u', 'glon are shorter than femp.', ('u',), ())
  task = passes.Task('k', 'reverse', 'reverse', 0, unit, None)
  the_pass = passes.PASSES.get('reverse')('reverse', _config().augment)
  assert the_pass.outputs(task, ' femp are taller than glon. And then the') == [
      'femp are taller than glon.']
  assert the_pass.outputs(task, '  Glon are  shorter than femp.') == []
  assert the_pass.outputs(task, ' no end') == []
  sentences = passes.PASSES.get('sentences')('sentences', _config().augment)
  assert sentences.outputs(task, None) == [unit.text]


# The journal ----------------------------------------------------------------


def test_the_journal_drops_a_cut_last_line_and_refuses_a_bad_one_before(
    tmp_path):
  path = tmp_path / 'journal.jsonl'
  journal = journal_lib.Journal(path)
  journal.append([{'key': 'a', 'digest': 'd', 'text': 'A.'},
                  {'key': 'b', 'digest': 'd', 'text': 'B.'}])
  with open(path, 'ab') as f:
    f.write(b'{"key": "c", "digest": "d", "te')  # A kill mid-write.
  journal = journal_lib.Journal(path)
  assert sorted(journal.entries) == ['a', 'b']
  assert journal.get('a', 'd')['text'] == 'A.' and journal.get('a', 'x') is None
  journal.append([{'key': 'c', 'digest': 'd', 'text': 'C.'}])
  assert sorted(journal_lib.Journal(path).entries) == ['a', 'b', 'c']
  path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
  with pytest.raises(errors.UserError, match=r'journal.jsonl:2: not a journal'):
    journal_lib.Journal(path)


# Runs -------------------------------------------------------------------------


def test_a_run_writes_a_deduplicated_dataset_with_provenance_and_audit(
    tmp_path, capsys):
  config = _config()
  fake = Fake()
  summary = runner.run(config, tmp_path / 'work', fake.generator(), tmp_path)
  records, provenance = _dataset(config, tmp_path)
  originals = datasets.resolve('reversals', 'small', tmp_path).documents()
  texts = [passes.text_key(r['text']) for r in records]
  assert len(set(texts)) == len(texts) == summary['documents']
  assert not set(texts) & {passes.text_key(d['text']) for d in originals}
  assert fake.prefixes and all(len(p) == 1 for p in fake.prefixes)
  lines = [json.loads(line) for line in provenance]
  by_id = {r['id']: r for r in records}  # TFDS orders records by key hash.
  assert sorted(p['id'] for p in lines) == sorted(by_id)
  for p in lines:
    r = by_id[p['id']]
    assert r['id'].startswith(f'{p["pass"]}/{p["template"]}/{p["unit"]}/')
    assert p['generator'] == 'fake' and p['sources']
    assert set(r['facts']) <= {f for d in originals if d['id'] in p['sources']
                               for f in d['facts']}
  assert summary['per_pass'].keys() == {'rephrase', 'reverse', 'infer',
                                        'global'}
  # The oracle states the reversal of each of the 8 facts: the audit sees it.
  audit = json.loads((tmp_path / 'work' / 'augment' / 'audit.json').read_text())
  reverse = {r['kind']: r for r in audit['audit'] if r['pass'] == 'reverse'}
  assert reverse['reverse']['true'] == reverse['reverse']['facts'] == 8
  assert reverse['all']['false'] == 0
  out = capsys.readouterr().out
  assert 'Pass reverse:' in out and '| reverse | reverse |' in out


def test_a_run_that_fails_midway_resumes_to_the_same_dataset(tmp_path):
  config = _config()
  whole = Fake()
  runner.run(config, tmp_path / 'whole', whole.generator(), tmp_path / 'a')
  expected = _dataset(config, tmp_path / 'a')

  dying = Fake(fail_after=5)
  with pytest.raises(RuntimeError, match='died'):
    runner.run(config, tmp_path / 'cut', dying.generator(), tmp_path / 'b')
  journaled = len(journal_lib.Journal(
      tmp_path / 'cut' / 'augment' / 'journal.jsonl').entries)
  assert journaled == dying.requests > 0
  rest = Fake()
  summary = runner.run(config, tmp_path / 'cut', rest.generator(),
                       tmp_path / 'b')
  assert rest.requests == whole.requests - journaled == summary['generated']
  assert _dataset(config, tmp_path / 'b') == expected
  cached = Fake()
  runner.run(config, tmp_path / 'cut', cached.generator(), tmp_path / 'b')
  assert cached.calls == 0  # Everything came from the journal.


def test_a_changed_template_regenerates_that_pass_only(tmp_path):
  config = _config()
  runner.run(config, tmp_path / 'w', Fake().generator(), tmp_path)
  config.augment.templates.rephrase = 'Say it again: {text}\nAgain:'
  again = Fake()
  runner.run(config, tmp_path / 'w', again.generator(), tmp_path)
  assert again.prefixes and all(p == {'Say it again: '} for p in again.prefixes)


def test_a_killed_run_resumes_to_the_same_dataset(tmp_path):
  config = _config()
  whole = Fake()
  runner.run(config, tmp_path / 'whole', whole.generator(), tmp_path)
  expected = _dataset(config, tmp_path)

  work = tmp_path / 'killed'
  journal = work / 'augment' / 'journal.jsonl'
  script = textwrap.dedent(f"""
      import sys
      sys.path[:0] = [{str(_ROOT)!r}, {str(pathlib.Path(__file__).parent)!r}]
      import test_augment
      from icl_iwl.augment import runner
      config = test_augment._config()
      runner.run(config, {str(work)!r},
                 test_augment.Fake(delay=0.3).generator(), {str(tmp_path)!r})
  """)
  child = subprocess.Popen([sys.executable, '-c', script],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 120
  while time.time() < deadline and child.poll() is None:
    if journal.exists() and journal.read_text().count('\n') >= 8:
      break
    time.sleep(0.05)
  assert child.poll() is None, child.stderr.read().decode()[-2000:]
  os.kill(child.pid, signal.SIGKILL)
  child.wait()
  child.stderr.close()
  done = len(journal_lib.Journal(journal).entries)
  rest = Fake()
  runner.run(config, work, rest.generator(), tmp_path)
  assert done >= 8 and rest.requests == whole.requests - done > 0
  assert _dataset(config, tmp_path) == expected


def test_a_second_run_on_one_workdir_is_refused(tmp_path):
  config = _config()
  with runner._exclusive(tmp_path / 'augment'):
    with pytest.raises(errors.UserError, match='Another augmentation run'):
      runner.run(config, tmp_path, Fake().generator(), tmp_path)


def test_sentence_splitting_makes_documents_without_a_generator(tmp_path):
  config = _config('semantic,split,tiny', sentence_split='cumulative')
  summary = runner.run(config, tmp_path / 'w', Fake(fail_after=0).generator(),
                       tmp_path)
  records, _ = _dataset(config, tmp_path)
  docs = {d['id']: d['text'] for d in
          datasets.resolve('semantic', 'small', tmp_path).documents()}
  assert summary['per_pass'] == {'sentences': len(records)} and records
  for r in records:
    source = r['id'].split('/')[2].split('#')[0]
    assert docs[source].startswith(r['text']) and r['text'] != docs[source]


def test_a_pass_that_makes_nothing_new_fails_clearly(tmp_path):
  user.write('one', {'train': [{'id': 'a', 'text': 'A fact.', 'facts': []},
                               {'id': 'b', 'text': 'Another.', 'facts': []}]},
             [schema.DOCUMENT], tmp_path)
  config = _config('jsonl/one,split')
  with pytest.raises(errors.UserError, match='made no new document'):
    runner.run(config, tmp_path / 'w', Fake().generator(), tmp_path)
