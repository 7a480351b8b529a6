"""The journal of completions: what makes an augmentation run resumable.

One JSON line per completion, `{"key", "digest", "text", "tokens"}`,
appended a batch at a time and fsynced before the next batch starts. A rerun
reads it and generates only the tasks it lacks, so a run killed at any point
loses at most the batch in flight. The last line of a killed write may be
cut: it is dropped (and regenerated); a bad line elsewhere is not a cut write
and stops the run.

`digest` fingerprints everything that decides a completion (the generator,
the options, the prefix, the prompt, the seed): an entry whose digest differs
from the task's (another template, another model) is ignored, never reused.
The last entry of a key wins.
"""

import json
import os
import pathlib
from typing import Any, Iterable

from icl_iwl import errors

Entry = dict[str, Any]


class Journal:
  """Completions by key, read from and appended to one JSONL file."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self.entries: dict[str, Entry] = {}
    self.appended = 0  # Entries this object wrote.
    if self.path.exists():
      self._read()

  def _read(self) -> None:
    data = self.path.read_bytes()
    end = data.rfind(b'\n') + 1
    if end < len(data):  # A write cut by a kill: drop it before appending.
      os.truncate(self.path, end)
    for lineno, line in enumerate(data[:end].split(b'\n'), start=1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
        key = entry['key']
      except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise errors.UserError(
            f'{self.path}:{lineno}: not a journal entry (only a last line can '
            'be cut by a kill). Move the journal away to generate everything '
            'again.') from None
      self.entries[key] = entry

  def get(self, key: str, digest: str) -> Entry | None:
    """The entry of `key` if it was made with `digest`."""
    entry = self.entries.get(key)
    if entry is None or entry.get('digest') != digest:
      return None
    return entry

  def append(self, entries: Iterable[Entry]) -> None:
    """Writes `entries` durably (flush + fsync), then remembers them."""
    entries = list(entries)
    text = ''.join(json.dumps(e, ensure_ascii=False) + '\n' for e in entries)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    with open(self.path, 'ab') as f:
      f.write(text.encode('utf-8'))
      f.flush()
      os.fsync(f.fileno())
    self.entries.update((e['key'], e) for e in entries)
    self.appended += len(entries)
