"""Augmented fine-tuning: the original documents mixed with augmented ones.

    config.data.sources = 'original:1,jsonl/augment_reversals:1'
    records = mixture.training_records(config.data)  # what a sampler gets

`data.sources` lists `<dataset>[:<weight>]` entries, comma-separated:
'original' is `data.dataset`'s split `data.split`; any other name is a
dataset (e.g. one written by configs/augment.py) whose 'train' split is
mixed in. A weight is how often each of a source's documents occurs per
epoch: 1 once, 2 twice, 0.5 a seeded half of them (`data.seed`), 0 never.
Without `data.sources`, the records are `data.split` of `data.dataset`
unchanged. Evaluation still scores the original dataset's probes
(`config.eval.dataset` '' means `data.dataset`).
"""

import random
from typing import Any, Collection, Sequence

import ml_collections

from icl_iwl import errors
from icl_iwl.data import datasets

ORIGINAL = 'original'
Record = dict[str, Any]


def parse(spec: str) -> list[tuple[str, float]]:
  """'original:1,jsonl/x:0.5' -> [('original', 1.0), ('jsonl/x', 0.5)].

  Raises:
    UserError: for a bad weight, a repeated source, or no weight above 0.
  """
  sources = []
  for part in (p.strip() for p in spec.split(',')):
    if not part:
      continue
    name, weight = part.rsplit(':', 1) if ':' in part else (part, '1')
    name = name.strip()
    try:
      value = float(weight)
    except ValueError:
      raise errors.UserError(f'{part!r}: the weight {weight!r} is not a '
                             'number.') from None
    if not value >= 0 or value == float('inf'):
      raise errors.UserError(f'{part!r}: a weight must be finite and >= 0.')
    if name in (n for n, _ in sources):
      raise errors.UserError(f'{name!r} is named twice.')
    sources.append((name, value))
  if not any(w > 0 for _, w in sources):
    raise errors.UserError(f'{spec!r} gives no source a weight above 0.')
  return sources


def _records(data: ml_collections.ConfigDict, name: str,
             data_dir: str | None) -> list[Record]:
  if name == ORIGINAL:
    return datasets.resolve(data.dataset, data.config, data_dir).records(
        data.split)
  return datasets.resolve(name, data.config, data_dir).records('train')


def check(data: ml_collections.ConfigDict, data_dir: str | None = None,
          skip: Collection[str] = ()) -> None:
  """Raises UserError unless every source of `data.sources` has documents
  (sources in `skip`, still to be written, are only checked by name)."""
  for name, _ in parse(data.sources):
    if name in skip:
      datasets.check_name(name)
      continue
    if name != ORIGINAL:
      datasets.check_name(name)
      ds = datasets.resolve(name, data.config, data_dir)
      try:
        splits = ds.splits()
      except errors.UserError:
        if not datasets.is_user(name):
          raise
        raise errors.UserError(
            f'there is no {name} in {ds.data_dir}: write it with `python -m '
            f'icl_iwl.main --config=configs/augment.py:{data.dataset} '
            '--workdir=...` (config.augment.output names it).') from None
      if 'train' not in splits:
        raise errors.UserError(f'{ds.label} has no split train.')
    if not any(r.get('text') for r in _records(data, name, data_dir)):
      raise errors.UserError(f'{name!r} has no documents.')


def repeat(records: Sequence[Record], weight: float, rng: random.Random
           ) -> list[Record]:
  """Every record int(weight) times, plus a seeded sample of the fraction."""
  whole = int(weight)
  extra = round((weight - whole) * len(records))
  chosen = sorted(rng.sample(range(len(records)), extra))
  return ([r for _ in range(whole) for r in records]
          + [records[i] for i in chosen])


def training_records(data: ml_collections.ConfigDict,
                     data_dir: str | None = None) -> list[Record]:
  """The training records of `config.data`: its split, or its mixture.

  Mixed records get ids '<source>#<copy>:<id>' so that they stay unique.
  """
  if not data.get('sources'):
    return datasets.resolve(data.dataset, data.config, data_dir).records(
        data.split)
  out = []
  for name, weight in parse(data.sources):
    records = _records(data, name, data_dir)
    rng = random.Random(f'mixture:{data.seed}:{name}')
    copies: dict[str, int] = {}
    for r in repeat(records, weight, rng):
      copy = copies[r['id']] = copies.get(r['id'], -1) + 1
      out.append({**r, 'id': f'{name}#{copy}:{r["id"]}'})
  return out
