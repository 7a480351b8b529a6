"""Training batches: sampled examples, tokenized, packed, batched (grain).

    it = iter(pipeline.batches(sampler, tok, seq_len=128, global_batch=8, seed=0))
    batch = next(it)      # numpy dict, this process's rows of the global batch:
                          # tokens, segment_ids, positions, loss_mask: [b, L]
    state = it.get_state()  # a small dict; it.set_state(state) resumes exactly

Examples are drawn by a sampler (samplers.py), laid out by `context.fit`,
shuffled per epoch and packed first-fit into the rows of the global batch
(segments restart positions at 0); each process keeps its own rows, so
batches do not depend on the number of processes. `loss_mask[t]` marks
tokens that are loss targets (predicted from position t - 1). Nothing is cut
silently: an example too long for a row loses whole context examples, least
similar first, never its prompt or target (`check_lengths` checks every
example before training).
"""

from absl import logging
import grain
import numpy as np

from icl_iwl.data import context as context_lib
from icl_iwl.data import samplers
from icl_iwl.data import tokenizer as tokenizer_lib


TooLongError = context_lib.TooLongError


def check_lengths(sampler: samplers.Sampler, tok: tokenizer_lib.Tokenizer,
                  seq_len: int, seed: int = 0) -> int:
  """Fits one draw of every example to `seq_len`; returns how many lose
  context examples (logged).

  Raises:
    TooLongError: naming how many examples' BOS, prompt and targets do not
      fit, and the longest, before any training step.
  """
  rng = np.random.default_rng(seed)
  too_long, cut = [], 0
  for i in range(len(sampler)):
    example = sampler(i, rng)
    try:
      fitted = context_lib.fit(example, tok, seq_len)
    except TooLongError:
      prompt, target = tok.encode_batch([example.prompt, example.target])
      too_long.append(1 + len(prompt) + len(target))
      continue
    cut += len(fitted.kept) < len(example.context)
  if too_long:
    raise TooLongError(
        f'{len(too_long)} of {len(sampler)} training examples need more than '
        f'train.seq_len = {seq_len} tokens for BOS, prompt and loss targets '
        f'(the longest {max(too_long)}): raise train.seq_len to at least '
        f'{max(too_long)}.')
  if cut:
    logging.warning('%d of %d examples lose context examples to fit %d tokens.',
                    cut, len(sampler), seq_len)
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
              .random_map(lambda i, rng: context_lib.fit(
                  sampler(int(i), rng), tok, seq_len).arrays(), seed=seed))
  packed = grain.experimental.FirstFitPackIterDataset(
      examples.to_iter_dataset(), length_struct={'tokens': seq_len, 'loss_mask': seq_len},
      num_packing_bins=global_batch, shuffle_bins=False)
  mine = slice(process_index * rows, (process_index + 1) * rows)
  return packed.batch(global_batch, drop_remainder=True).map(
      lambda b: {'tokens': b['tokens'][mine], 'segment_ids': b['tokens_segment_ids'][mine],
                 'positions': b['tokens_positions'][mine], 'loss_mask': b['loss_mask'][mine]})
