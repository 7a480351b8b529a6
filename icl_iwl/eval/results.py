"""Evaluation outputs: per-item JSONL, a summary JSON, a markdown table."""

import json
import pathlib
from typing import Any, Iterable, Mapping, Sequence

from icl_iwl import paths
from icl_iwl.eval import scoring


def write_items(path: str | pathlib.Path, scores: Iterable[scoring.ItemScore],
                extra: Mapping[str, Any] | None = None) -> None:
  """One JSON line per item (atomically replaces `path`)."""
  with paths.atomic_path(path) as tmp, open(tmp, 'w') as f:
    for s in scores:
      f.write(json.dumps({**(extra or {}), **s.to_json()}) + '\n')


def write_json(path: str | pathlib.Path, value: Any) -> None:
  with paths.atomic_path(path) as tmp:
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + '\n')


def chance(scores: Sequence[scoring.ItemScore]) -> float:
  """Expected accuracy of guessing uniformly among each item's choices."""
  return sum(1 / len(s.logprob) for s in scores) / max(1, len(scores))
