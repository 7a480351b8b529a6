"""Runs the passes of `config.augment`: completions, the dataset, the audit.

    summary = runner.run(config, workdir, generate.load(config))

For each pass in order: its tasks, their completions (from the journal, or
generated in batches that share a prefix, each batch journaled before the
next), its new documents, and its audit, printed. Then the new documents of
every pass become the user dataset `jsonl/<config.augment.output>` (split
'train', document records), replacing an older one only once written.

The dataset is a function of the tasks and their completions alone, taken in
task order (a pure function of the config and the source documents): a run
killed at any point and rerun ends with the same dataset as a run never
killed. New documents are deduplicated (case and whitespace aside) against
the source documents and each other, the first in pass and task order kept.

Record ids are `<pass>/<template>/<unit>/<sample>/<output>`
("reverse/reverse/doc-0003#s1/0/0"); `facts` are the source documents'
facts. Provenance (pass, template, sample, seed, unit, source documents,
generator) is one JSON line per record in `provenance.jsonl`, written with
`audit.json` and `audit.md` into <workdir>/augment/ and beside the dataset
(<data dir>/jsonl/<output>/augmentation/).
"""

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import pathlib
import time
from typing import Any, Iterator, Sequence

from absl import logging
import ml_collections
import tqdm

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl import paths
from icl_iwl.augment import audit
from icl_iwl.augment import checkers
from icl_iwl.augment import generate
from icl_iwl.augment import journal as journal_lib
from icl_iwl.augment import passes
from icl_iwl.data import datasets
from icl_iwl.data import schema
from icl_iwl.data.builders import user

SIDECAR = 'augmentation'  # Beside the dataset: <data dir>/jsonl/<name>/<this>.


@dataclasses.dataclass(frozen=True)
class Output:
  """A new training document and where it came from."""

  record: dict[str, Any]  # A document record: id, text, facts.
  provenance: dict[str, Any]


def digest(generator_name: str, options: generate.Options,
           request: generate.Request) -> str:
  """What a completion depends on, as a short hash (see journal.py)."""
  parts = [generator_name, dataclasses.asdict(options),
           dataclasses.asdict(request)]
  return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _batches(todo: Sequence[tuple[passes.Task, str]], size: int
             ) -> Iterator[list[tuple[passes.Task, str]]]:
  """Consecutive tasks with one prefix, at most `size` at a time."""
  batch: list[tuple[passes.Task, str]] = []
  for item in todo:
    if batch and (len(batch) == size
                  or item[0].request.prefix != batch[0][0].request.prefix):
      yield batch
      batch = []
    batch.append(item)
  if batch:
    yield batch


def complete(tasks: Sequence[passes.Task], generator: generate.Generator,
             options: generate.Options, journal: journal_lib.Journal,
             batch_size: int, desc: str = 'generate') -> dict[str, str]:
  """Completion by task key: journaled ones reused, the rest generated.

  Returns:
    The completion of every task that has a request.
  """
  done, todo = {}, []
  for task in tasks:
    if task.request is None:
      continue
    fingerprint = digest(generator.name, options, task.request)
    entry = journal.get(task.key, fingerprint)
    if entry is not None:
      done[task.key] = entry['text']
    else:
      todo.append((task, fingerprint))
  logging.info('%s: %d completions journaled, %d to generate', desc,
               len(done), len(todo))
  if not todo:
    return done
  bar = tqdm.tqdm(total=len(todo), desc=desc, unit='ex', dynamic_ncols=True)
  start, tokens = time.perf_counter(), 0
  for batch in _batches(todo, batch_size):
    texts = generator.generate([t.request for t, _ in batch], options)
    if len(texts) != len(batch):
      raise RuntimeError(f'The generator returned {len(texts)} completions '
                         f'for {len(batch)} requests.')
    entries = [{'key': t.key, 'digest': d, 'text': text,
                'tokens': generator.count_tokens(text)}
               for (t, d), text in zip(batch, texts)]
    journal.append(entries)
    done.update((e['key'], e['text']) for e in entries)
    tokens += sum(e['tokens'] for e in entries)
    bar.update(len(batch))
    bar.set_postfix(tok_s=f'{tokens / (time.perf_counter() - start):.1f}')
  bar.close()
  return done


def build(the_pass: passes.Pass, tasks: Sequence[passes.Task],
          completions: dict[str, str], seen: set[str],
          generator_name: str) -> list[Output]:
  """The new documents of `tasks`, minus those whose `passes.text_key` is in
  `seen` (which they are added to)."""
  outputs = []
  for task in tasks:
    for i, text in enumerate(the_pass.outputs(task, completions.get(task.key))):
      key = passes.text_key(text)
      if key in seen:
        continue
      seen.add(key)
      record_id = f'{task.key}/{i}'
      outputs.append(Output(
          {'id': record_id, 'text': text, 'facts': list(task.unit.facts)},
          {'id': record_id, 'pass': task.pass_name, 'template': task.template,
           'sample': task.sample,
           'seed': task.request.seed if task.request else None,
           'unit': task.unit.id, 'sources': list(task.unit.sources),
           'generator': generator_name if task.request else None}))
  return outputs


@contextlib.contextmanager
def _exclusive(directory: pathlib.Path) -> Iterator[None]:
  """One run at a time per workdir (a second one fails at once)."""
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory / '.lock', 'a') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise errors.UserError(
          f'Another augmentation run is using {directory}.') from None
    yield


def _write_sidecars(directory: pathlib.Path, outputs: Sequence[Output],
                    audit_rows: list[dict], info: dict[str, Any]) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  with paths.atomic_path(directory / 'provenance.jsonl') as tmp:
    tmp.write_text(''.join(json.dumps(o.provenance, ensure_ascii=False) + '\n'
                           for o in outputs))
  with paths.atomic_path(directory / 'audit.json') as tmp:
    tmp.write_text(json.dumps({**info, 'audit': audit_rows}, indent=2) + '\n')
  body = audit.table(audit_rows) if audit_rows else info['audit']
  with paths.atomic_path(directory / 'audit.md') as tmp:
    tmp.write_text(f'# Audit of jsonl/{info["output"]}\n\n{body}\n')


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
        generator: generate.Generator,
        data_dir: str | pathlib.Path | None = None) -> dict[str, Any]:
  """Runs (or resumes) every pass of `config.augment`; writes the dataset.

  Returns:
    A summary: the dataset, new documents per pass, completions generated
    by this run, and the audit's 'all' rows.
  """
  s = config.augment
  source = datasets.resolve(s.dataset, s.config, data_dir)
  documents = source.documents(s.split)
  if not documents:
    raise errors.UserError(f'{source.label} has no documents in split '
                           f'{s.split!r} to augment.')
  targets = documents[:s.limit] if s.limit else documents
  checker = (None if datasets.is_user(s.dataset)
             else checkers.for_dataset(s.dataset, s.config))
  options = generate.Options(s.max_new_tokens, float(s.temperature),
                             tuple(s.stop))
  out = pathlib.Path(workdir) / 'augment'
  with _exclusive(out):
    journal = journal_lib.Journal(out / 'journal.jsonl')
    seen = {passes.text_key(d['text']) for d in documents}
    outputs: list[Output] = []
    audit_rows = []
    if checker is not None:
      audit_rows += audit.rows(checker, 'original',
                               [d['text'] for d in targets])
    for name in config_lib.split_list(s.passes):
      the_pass = passes.PASSES.get(name)(name, s)
      tasks = the_pass.tasks(targets, documents, generator.count_tokens)
      completions = complete(tasks, generator, options, journal, s.batch_size,
                             desc=name)
      new = build(the_pass, tasks, completions, seen, generator.name)
      outputs += new
      message = f'Pass {name}: {len(tasks)} tasks, {len(new)} new documents.'
      if checker is not None:
        rows = audit.rows(checker, name, [o.record['text'] for o in new])
        audit_rows += rows
        message += '\n' + audit.table(rows)
      print(message, flush=True)
    if not outputs:
      raise errors.UserError(
          f'The passes {s.passes!r} made no new document from {source.label} '
          '(every one repeats a source document), so there is no dataset to '
          'write.')
    builder = user.write(s.output, {'train': [o.record for o in outputs]},
                         [schema.DOCUMENT], data_dir, overwrite=True)
    info = {'output': s.output, 'source': source.label, 'split': s.split,
            'generator': generator.name, 'passes': s.passes,
            'options': dataclasses.asdict(options), 'seed': s.seed,
            'documents': len(outputs),
            'audit': ('' if checker is not None else
                      f'No knowledge base for {source.label}: not audited.')}
    for directory in (out, pathlib.Path(builder.data_dir).parent / SIDECAR):
      _write_sidecars(directory, outputs, audit_rows, info)
  if audit_rows:
    print(f'Audit of jsonl/{s.output}:\n{audit.table(audit_rows)}')
  return {'dataset': f'jsonl/{s.output}', 'documents': len(outputs),
          'per_pass': dict(collections.Counter(o.provenance['pass']
                                               for o in outputs)),
          'generated': journal.appended,
          'audit': [r for r in audit_rows if r['kind'] == 'all']}
