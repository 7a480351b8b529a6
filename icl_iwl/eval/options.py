"""The scorer's and the ICL evaluation's settings (no jax here).

Configs build their `scorer` and `icl` blocks from these defaults
(`config_lib.scorer()`, `config_lib.icl()`), so each default is defined
once, here.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
  """Shapes and policies of the scorer.

  rows_per_batch: most rows per call (rounded up to a multiple of the batch
    shards); a last, partial batch has fewer (a power of two times the shards).
  buckets: allowed row lengths; an item longer than the largest is too long.
  min_row_length: short items share rows of at least this length (fewer,
    fuller rows: less padding).
  context_chunk: a shared context is encoded in chunks of this many tokens
    into a memory whose length is a multiple of it.
  max_context: longest shared context (tokens).
  too_long: 'error', or 'truncate_left' (drop the oldest prompt tokens, keep
    the first; logged) for items longer than the largest bucket.
  share_context: encode each distinct context once into a key/value memory
    (False: put the context tokens in every item's row; for checking).
  context_cache: how many encoded contexts are kept for later calls (the
    least recently used is dropped first; each is 2 x layers x length x kv
    heads x head dim values: 151 MB for the 270M model at 4,096 tokens, f32).
  logit_chunk: most targets whose logits are made at once, over all batch
    shards (a power of two; 512: [512, V] float32 logits, 0.54 GB).
  """

  rows_per_batch: int = 8
  buckets: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
  min_row_length: int = 128
  context_chunk: int = 512
  max_context: int = 8192
  too_long: str = 'error'
  share_context: bool = True
  context_cache: int = 8
  logit_chunk: int = 512

  def __post_init__(self):
    if self.logit_chunk < 1 or self.logit_chunk & (self.logit_chunk - 1):
      raise ValueError(f'logit_chunk must be a power of two, not {self.logit_chunk}.')
    if self.too_long not in ('error', 'truncate_left'):
      raise ValueError(f"too_long must be 'error' or 'truncate_left', "
                       f'not {self.too_long!r}.')


@dataclasses.dataclass(frozen=True)
class IclConfig:
  """How documents are put in context.

  protocol: 'paper' or 'retrieval' (see the module doc).
  template: the context; '{documents}' is replaced by the joined documents.
  separator: between documents.
  budget: most tokens of context (documents and template, BOS included).
  num_subsamples: contexts drawn when the documents do not fit.
  docs_per_fact: retrieval: most documents stating one fact in a group's
    context (0: all).
  relevant_fraction: retrieval: share of the budget a group's own documents
    may take; the rest is random other documents.
  seed: for subsampling and shuffling.
  """

  protocol: str = 'paper'
  template: str = '{documents}\n\n'
  separator: str = '\n\n'
  budget: int = 4096
  num_subsamples: int = 8
  docs_per_fact: int = 1
  relevant_fraction: float = 0.5
  seed: int = 0

  def __post_init__(self):
    if self.protocol not in PROTOCOLS:
      raise ValueError(f'Unknown ICL protocol {self.protocol!r}; use one of '
                       f'{PROTOCOLS}.')


PROTOCOLS = ('paper', 'retrieval')
