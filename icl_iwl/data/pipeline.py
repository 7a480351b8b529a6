"""Training batches: sampled examples, tokenized, packed, batched (grain).

    it = iter(pipeline.batches(sampler, tok, seq_len=128, global_batch=8, seed=0))
    batch = next(it)      # numpy dict, this process's rows of the global batch:
                          # tokens, segment_ids, positions, loss_mask: [b, L]
    state = it.get_state()  # a small dict; it.set_state(state) resumes exactly

Examples are shuffled per epoch and packed first-fit into the rows of the
global batch (segments restart positions at 0); each process keeps its own
rows, so batches do not depend on the number of processes. `loss_mask[t]`
marks tokens that are loss targets (predicted from position t - 1).
"""

from typing import Sequence

from absl import logging
import grain
import numpy as np

from icl_iwl.data import samplers
from icl_iwl.data import tokenizer as tokenizer_lib


def tokenize(pieces: Sequence[samplers.Piece], tok: tokenizer_lib.Tokenizer,
             max_len: int) -> dict[str, np.ndarray]:
  """BOS + pieces as {'tokens', 'loss_mask'} int32 [<= max_len] (cut at the end)."""
  tokens, mask = [tok.bos_id], [0]
  for text, target in pieces:
    ids = tok.encode(text)
    tokens += ids
    mask += [int(target)] * len(ids)
  if len(tokens) > max_len:
    logging.log_first_n(logging.WARNING, 'Cutting examples of %d tokens to %d.', 5,
                        len(tokens), max_len)
  return {'tokens': np.asarray(tokens[:max_len], np.int32),
          'loss_mask': np.asarray(mask[:max_len], np.int32)}


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
