r"""Import user JSONL files as a TFDS dataset with the shared schema.

    python -m icl_iwl.data.jsonl --name=mydata \
        --documents=train=docs.jsonl --probes=test_mc=probes.jsonl \
        [--pairs=train_pairs=pairs.jsonl] [--data_dir=...] [--overwrite]

One JSON object per line (blank lines are skipped); keys marked ? are optional:
  documents  {"text": str, "id"?: str, "facts"?: [str]}
  probes     {"prompt": str, "choices": [str, ...], "answer": int,
              "id"?: str, "facts"?: [str], "kind"?: str}
  pairs      {"input": str, "output": str, "task"?: str, "id"?: str,
              "facts"?: [str]}
A missing id becomes `<file name>:<line>`. Every line of every file is checked
before anything is written; the first bad line fails with `path:line: reason`
(bad JSON, invalid Unicode, missing or unknown key, wrong type, no choices,
an empty or repeated choice, answer out of range, duplicate id, a file given
twice). An existing dataset is replaced (--overwrite) only once the new one is
completely written. The dataset then reads back as
`icl_iwl.data.datasets.resolve('jsonl/mydata')`.
"""

import json
import os
import pathlib
from typing import Any, Callable, Sequence

from absl import app
from absl import flags

from icl_iwl import errors
from icl_iwl.data import schema
from icl_iwl.data.builders import base
from icl_iwl.data.builders import user

SOURCE_KINDS = {
    'documents': schema.DOCUMENT,
    'probes': schema.MC,
    'pairs': schema.PAIR,
}
_OPTIONAL = {'id': None, 'facts': [], 'kind': '', 'task': ''}

Path = str | os.PathLike


class JsonlError(errors.UserError):
  """A malformed input line, reported as `path:line: reason`."""


def _open(path: Path):
  """The file opened for reading, or JsonlError saying why it cannot be."""
  try:
    return open(path, 'rb')
  except FileNotFoundError:
    raise JsonlError(f'{path}: no such file') from None
  except IsADirectoryError:
    raise JsonlError(f'{path}: is a directory, not a JSONL file') from None
  except OSError as e:
    raise JsonlError(f'{path}: cannot read ({e.strerror})') from None


def read_objects(path: Path) -> list[tuple[int, dict[str, Any]]]:
  """(line number, object) for every non-blank line of a JSONL file."""
  objects = []
  with _open(path) as f:
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode('utf-8')
      except UnicodeDecodeError:
        raise JsonlError(f'{path}:{lineno}: not valid UTF-8') from None
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise JsonlError(f'{path}:{lineno}: bad JSON: {e.msg}') from None
      if not isinstance(obj, dict):
        raise JsonlError(
            f'{path}:{lineno}: expected a JSON object, got '
            f'{type(obj).__name__}')
      bad = next((k for k, v in obj.items() if not _valid_unicode(v)), None)
      if bad is not None:
        raise JsonlError(f'{path}:{lineno}: {bad!r} is not valid Unicode '
                         '(an unpaired surrogate escape such as \\ud800?)')
      objects.append((lineno, obj))
  if not objects:
    raise JsonlError(f'{path}: no records')
  return objects


def _valid_unicode(value: Any) -> bool:
  """Whether every string in `value` encodes as UTF-8 (no lone surrogate)."""
  if isinstance(value, list):
    return all(_valid_unicode(v) for v in value)
  if isinstance(value, str):
    try:
      value.encode('utf-8')
    except UnicodeEncodeError:
      return False
  return True


def read_records(path: Path, source: str) -> list[tuple[int, base.Record]]:
  """(line number, validated record) for every line of a `source` file.

  Args:
    path: the JSONL file.
    source: 'documents', 'probes' or 'pairs'.
  """
  kind = SOURCE_KINDS[source]
  records = []
  for lineno, obj in read_objects(path):
    unknown = sorted(set(obj) - set(kind.fields))
    if unknown:
      raise JsonlError(
          f'{path}:{lineno}: unknown key {unknown[0]!r} for {source}')
    defaults = {k: v for k, v in _OPTIONAL.items() if k in kind.fields}
    defaults['id'] = f'{pathlib.Path(path).name}:{lineno}'
    record = {**defaults, **obj}
    problem = schema.problem(record, kind)
    if problem:
      raise JsonlError(f'{path}:{lineno}: {problem}')
    records.append((lineno, record))
  return records


def collect(
    sources: Sequence[tuple[str, str, Path]],
) -> tuple[base.Splits, list[schema.RecordKind]]:
  """Reads and checks every file; returns the splits and the kinds in them.

  Args:
    sources: (source, split, path) triples; several files may fill one split
      if they are of the same source.
  """
  splits: base.Splits = {}
  split_source: dict[str, str] = {}
  first_seen: dict[tuple[str, str], str] = {}
  files: set[tuple[str, pathlib.Path]] = set()
  for source, split, path in sources:
    if source not in SOURCE_KINDS:
      raise errors.UserError(
          f'Unknown source {source!r}; use one of {list(SOURCE_KINDS)}.')
    if split_source.setdefault(split, source) != source:
      raise errors.UserError(
          f'Split {split!r} mixes {split_source[split]} and {source}.')
    if (split, pathlib.Path(path).resolve()) in files:
      raise errors.UserError(f'{path} is given twice for split {split!r}.')
    files.add((split, pathlib.Path(path).resolve()))
    for lineno, record in read_records(path, source):
      where = first_seen.setdefault((split, record['id']), f'{path}:{lineno}')
      if where != f'{path}:{lineno}':
        raise JsonlError(
            f'{path}:{lineno}: duplicate id {record["id"]!r} in split '
            f'{split!r} '
            f'(first at {where})')
      splits.setdefault(split, []).append(record)
  if not splits:
    raise errors.UserError('No input files given.')
  kinds = [SOURCE_KINDS[s] for s in dict.fromkeys(split_source.values())]
  return splits, kinds


def import_jsonl(
    name: str,
    sources: Sequence[tuple[str, str, Path]],
    data_dir: Path | None = None,
    overwrite: bool = False,
):
  """Validates every line of `sources`, then writes the dataset `jsonl/<name>`.

  Args:
    name: the user dataset's name (the TFDS config of builder 'jsonl').
    sources: (source, split, path) triples, source in SOURCE_KINDS.
    data_dir: TFDS data dir; default `icl_iwl.paths.data_dir()`.
    overwrite: replace an existing dataset of that name.

  Returns:
    The TFDS builder of the written dataset.

  Raises:
    JsonlError: on the first malformed line; nothing is written then.
  """
  splits, kinds = collect(sources)
  return user.write(name, splits, kinds, data_dir, overwrite)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run, so modules import cleanly)."""
  flags.DEFINE_string('name', None, 'Name of the dataset to write.')
  flags.DEFINE_multi_string(
      'documents', [], 'split=path of a documents file ({"text"} lines).')
  flags.DEFINE_multi_string(
      'probes', [], 'split=path of an MC probes file ({"prompt", "choices", '
      '"answer"} lines).')
  flags.DEFINE_multi_string(
      'pairs', [],
      'split=path of a task-pairs file ({"input", "output"} lines).')
  flags.DEFINE_string(
      'data_dir', None, 'TFDS data dir (default: $ICL_IWL_DATA_DIR).')
  flags.DEFINE_bool(
      'overwrite', False, 'Replace an existing dataset of the same name.')


def _parse_sources() -> list[tuple[str, str, str]]:
  sources = []
  for source in SOURCE_KINDS:
    specs = FLAGS[source].value
    for spec in specs:
      split, sep, path = spec.partition('=')
      if not sep or not split or not path:
        raise app.UsageError(f'--{source}={spec!r}: expected split=path.')
      sources.append((source, split, path))
  return sources


def run_import(import_fn: Callable[..., Any], *args: Any) -> None:
  """Command-line wrapper of an importer: prints the directory written and
  the examples per split (errors: see `errors.main_wrapper`)."""
  builder = import_fn(*args)
  counts = ', '.join(
      f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())
  print(f'Wrote {builder.data_dir} ({counts})')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.name:
    raise app.UsageError('--name is required.')
  run_import(import_jsonl, FLAGS.name, _parse_sources(), FLAGS.data_dir,
             FLAGS.overwrite)


if __name__ == '__main__':
  define_flags()
  app.run(errors.main_wrapper(main))
