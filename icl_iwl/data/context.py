"""One way to lay out an in-context sequence under a token budget.

Training (`pipeline.py`) builds every sequence here, and evaluation can: a
sampler (samplers.py) says *which* examples go in context; this module says
how they become tokens and what goes when they do not fit.

    ex = context.Example(
        context=('Input: a\\nOutput: x\\n', 'Input: b\\nOutput: y\\n'),
        prompt='Input: c\\nOutput:', target=' z\\n', similar=(False, True))
    fitted = context.fit(ex, tok, max_len=128)
    fitted.tokens, fitted.loss_mask    # int32 [T <= max_len]
    fitted.kept, fitted.grade          # context examples kept, similar ones kept

Layout: BOS, the kept context examples in their order, the prompt, the
target. Only the target's tokens are loss targets. Each piece is tokenized on
its own; the IC-Train format makes that equal to tokenizing the joined text
(every context example ends in `schema.END`, which never merges).

Too long: whole context examples go, never part of one, never the prompt or
the target. They go least similar first: the examples not marked `similar`,
oldest (first) first, then the similar ones, oldest first. So a contrastive
context keeps its similar examples (its grade) as long as anything of the
context stays, and a `similar` context, ordered by ascending similarity, loses
its least similar examples first. An example whose prompt and target alone do
not fit is an error (`TooLongError`), never cut.
"""

import dataclasses
from typing import Sequence

import numpy as np

from icl_iwl import errors
from icl_iwl.data import tokenizer as tokenizer_lib


class TooLongError(errors.UserError):
  """An example whose prompt and loss targets do not fit a sequence."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One sequence before tokenization.

  context: the context examples, each a unit that is kept or dropped whole.
  prompt: text after the context, always kept, not a loss target.
  target: the loss target, always kept.
  similar: per context example, whether it was chosen for its similarity to
    the target (dropped last); default: none.
  sources: per context example, the index of its record (for checks and
    analysis); default: none given.
  kind: the sampler that built it (a mixture names its component).
  """

  context: tuple[str, ...] = ()
  prompt: str = ''
  target: str = ''
  similar: tuple[bool, ...] | None = None
  sources: tuple[int, ...] | None = None
  kind: str = ''

  def __post_init__(self):
    for name in ('similar', 'sources'):
      value = getattr(self, name)
      if value is not None and len(value) != len(self.context):
        raise ValueError(f'Example.{name} has {len(value)} entries for '
                         f'{len(self.context)} context examples.')

  @property
  def grade(self) -> int:
    """How many context examples are marked similar."""
    return sum(self.similar or ())


@dataclasses.dataclass(frozen=True)
class Fitted:
  """An Example as tokens: BOS, kept context, prompt, target.

  tokens, loss_mask: int32 [T], T <= the budget; loss_mask marks target tokens.
  kept: indices (into Example.context) of the context examples kept, in order.
  grade: how many of the kept ones are marked similar.
  """

  tokens: np.ndarray
  loss_mask: np.ndarray
  kept: tuple[int, ...]
  grade: int

  def arrays(self) -> dict[str, np.ndarray]:
    return {'tokens': self.tokens, 'loss_mask': self.loss_mask}


def drop_order(similar: Sequence[bool]) -> list[int]:
  """Context indices in the order they are dropped: not similar first, then
  similar, each oldest first."""
  return sorted(range(len(similar)), key=lambda i: (bool(similar[i]), i))


def keep(lengths: Sequence[int], fixed: int, budget: int,
         similar: Sequence[bool] | None = None) -> list[int]:
  """Which context examples fit: drops them in `drop_order` until the kept
  ones' `lengths` plus `fixed` tokens fit `budget`.

  Returns:
    The kept indices, ascending.

  Raises:
    TooLongError: if `fixed` alone exceeds `budget`.
  """
  if fixed > budget:
    raise TooLongError(f'{fixed} tokens must be kept but the budget is {budget}.')
  total = fixed + sum(lengths)
  dropped = set()
  for i in drop_order(similar or [False] * len(lengths)):
    if total <= budget:
      break
    dropped.add(i)
    total -= lengths[i]
  return [i for i in range(len(lengths)) if i not in dropped]


def fit(example: Example, tok: tokenizer_lib.Tokenizer, max_len: int) -> Fitted:
  """`example` as at most `max_len` tokens (see the module doc).

  Raises:
    TooLongError: if BOS, the prompt and the target alone exceed `max_len`.
  """
  ids = tok.encode_batch([*example.context, example.prompt, example.target])
  *units, prompt, target = ids
  fixed = 1 + len(prompt) + len(target)
  try:
    kept = keep([len(u) for u in units], fixed, max_len, example.similar)
  except TooLongError:
    raise TooLongError(
        f'An example has {fixed} tokens of BOS, prompt and target '
        f'({len(target)} loss targets), more than the budget of {max_len}.'
    ) from None
  tokens = [tok.bos_id, *(t for i in kept for t in units[i]), *prompt, *target]
  mask = np.zeros(len(tokens), np.int32)
  mask[len(tokens) - len(target):] = 1
  similar = example.similar or (False,) * len(units)
  return Fitted(np.asarray(tokens, np.int32), mask, tuple(kept),
                sum(similar[i] for i in kept))
