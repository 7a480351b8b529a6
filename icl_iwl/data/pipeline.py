"""Training batches: sampled examples, tokenized, packed, batched (grain).

    it = iter(pipeline.batches(sampler, tok, seq_len=128, global_batch=8, seed=0))
    batch = next(it)      # numpy dict, this process's rows of the global batch:
                          # tokens, segment_ids, positions, loss_mask: [b, L]
    state = it.get_state()  # a small dict; it.set_state(state) resumes exactly

Examples are shuffled per epoch and packed first-fit into the rows of the
global batch (segments restart positions at 0); each process keeps its own
rows, so batches do not depend on the number of processes. `loss_mask[t]`
marks tokens that are loss targets (predicted from position t - 1). Nothing
is cut silently: an example too long for a row loses context tokens, never
targets (`check_lengths` checks every example before training).
"""

from typing import Sequence

from absl import logging
import grain
import numpy as np

from icl_iwl import errors
from icl_iwl.data import samplers
from icl_iwl.data import tokenizer as tokenizer_lib


class TooLongError(errors.UserError):
  """An example whose loss targets do not fit a sequence."""


def tokenize(pieces: Sequence[samplers.Piece], tok: tokenizer_lib.Tokenizer,
             max_len: int) -> dict[str, np.ndarray]:
  """BOS + pieces as {'tokens', 'loss_mask'} int32 [<= max_len].

  An example longer than `max_len` loses context tokens (not targets) from
  its start, after BOS; one whose targets alone do not fit is an error.
  """
  tokens, mask = [tok.bos_id], [0]
  for text, target in pieces:
    ids = tok.encode(text)
    tokens += ids
    mask += [int(target)] * len(ids)
  excess = len(tokens) - max_len
  if excess > 0:
    context = [i for i in range(1, len(tokens)) if not mask[i]]
    if len(context) < excess:
      raise TooLongError(
          f'An example has {len(tokens)} tokens, {sum(mask)} of them loss '
          f'targets, but train.seq_len is {max_len}: raise train.seq_len.')
    drop = set(context[:excess])
    tokens = [t for i, t in enumerate(tokens) if i not in drop]
    mask = [m for i, m in enumerate(mask) if i not in drop]
  return {'tokens': np.asarray(tokens, np.int32),
          'loss_mask': np.asarray(mask, np.int32)}


def check_lengths(sampler: samplers.Sampler, tok: tokenizer_lib.Tokenizer,
                  seq_len: int, seed: int = 0) -> int:
  """Tokenizes one draw of every example; returns how many lose context
  tokens to fit `seq_len` (logged).

  Raises:
    TooLongError: naming how many examples' targets do not fit, and the
      longest, before any training step.
  """
  rng = np.random.default_rng(seed)
  needed, cut = [], 0  # Needed: BOS and the targets.
  for i in range(len(sampler)):
    pieces = sampler(i, rng)
    lengths = [len(ids) for ids in tok.encode_batch([t for t, _ in pieces])]
    needed.append(1 + sum(n for n, (_, target) in zip(lengths, pieces) if target))
    cut += 1 + sum(lengths) > seq_len
  too_long = [n for n in needed if n > seq_len]
  if too_long:
    raise TooLongError(
        f'{len(too_long)} of {len(needed)} training examples have more loss '
        f'targets than train.seq_len = {seq_len} tokens (the longest '
        f'{max(too_long)}): raise train.seq_len to at least {max(too_long)}.')
  if cut:
    logging.warning('%d of %d examples lose context tokens to fit %d tokens.',
                    cut, len(needed), seq_len)
  return cut


def batches(sampler: samplers.Sampler, tok: tokenizer_lib.Tokenizer, seq_len: int,
            global_batch: int, seed: int, process_index: int = 0,
            process_count: int = 1) -> grain.IterDataset:
  """An endless, checkpointable dataset of this process's rows of each batch.

  Args:
    sampler: builds each example (see samplers.py).
    tok: tokenizer.
    seq_len: L, tokens per row.
    global_batch: rows per batch over all processes.
    seed: shuffling and sampling seed.
    process_index, process_count: which rows this process keeps.
  """
  if global_batch % process_count:
    raise ValueError(f'Global batch {global_batch} does not split over '
                     f'{process_count} processes.')
  rows = global_batch // process_count
  examples = (grain.MapDataset.range(len(sampler))
              .shuffle(seed=seed)
              .repeat()
              .random_map(lambda i, rng: tokenize(sampler(int(i), rng), tok, seq_len),
                          seed=seed))
  packed = grain.experimental.FirstFitPackIterDataset(
      examples.to_iter_dataset(), length_struct={'tokens': seq_len, 'loss_mask': seq_len},
      num_packing_bins=global_batch, shuffle_bins=False)
  mine = slice(process_index * rows, (process_index + 1) * rows)
  return packed.batch(global_batch, drop_remainder=True).map(
      lambda b: {'tokens': b['tokens'][mine], 'segment_ids': b['tokens_segment_ids'][mine],
                 'positions': b['tokens_positions'][mine], 'loss_mask': b['loss_mask'][mine]})
