"""What augmentation needs from a text generator, and the one adapter to it.

The passes only build requests and read completions; the decoder behind them
is anything with this interface:

    generate(requests: Sequence[Request], options: Options) -> list[str]

  * Every request of one call has the same `prefix` (the few-shot examples, or
    the documents in context), so a decoder can encode it once and continue
    each `prompt` from its cache. The text fed to the model is BOS + prefix +
    prompt; the completion excludes both.
  * A completion stops after `options.max_new_tokens` tokens, at EOS, or just
    before the first of `options.stop` (which it does not contain).
  * `options.temperature` 0 is greedy; otherwise sampling seeded by
    `request.seed`. A request's completion must not depend on the other
    requests in the call (its batch or its position): a resumed run batches
    the remaining requests differently, and must end with the same dataset.

`load(config)` is the only place that knows the real decoder
(`icl_iwl/decode.py`, which keeps these rules); tests pass fakes
(`Generator(generate=..., ...)`).
"""

import dataclasses
import functools
from typing import Callable, Sequence

import ml_collections


@dataclasses.dataclass(frozen=True)
class Request:
  """One completion to generate: BOS + prefix + prompt -> text."""

  prefix: str  # Shared by every request of a call.
  prompt: str
  seed: int  # Seeds sampling (unused when greedy).


@dataclasses.dataclass(frozen=True)
class Options:
  """How completions are generated (the same for every request of a pass)."""

  max_new_tokens: int = 64
  temperature: float = 0.0  # 0: greedy.
  stop: tuple[str, ...] = ('\n',)


Generate = Callable[[Sequence[Request], Options], list[str]]


@dataclasses.dataclass(frozen=True)
class Generator:
  """A decoder behind the `Generate` interface.

  Attributes:
    name: what generated the data, stored with every example (the
      checkpoint spec, e.g. 'gemma3_270m:embedded').
    generate: completions of requests (see the module doc); may load the
      model on its first call, so that a run whose completions are all cached
      never loads it.
    count_tokens: tokens of a text under the generator's tokenizer (no BOS),
      to fill a context budget and to report tokens/s.
  """

  name: str
  generate: Generate
  count_tokens: Callable[[str], int]


def _tokenizer(model: ml_collections.ConfigDict):
  """The tokenizer of `model.checkpoint`, without loading the weights."""
  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import tokenizer as tokenizer_lib
  kind, _, path = model.checkpoint.partition(':')
  if kind == 'gguf':
    return tokenizer_lib.from_gguf(path)
  if kind == 'hf':
    return tokenizer_lib.from_hf_dir(path)
  return tokenizer_lib.load_default()  # embedded, random: Gemma 3's.


def load(config: ml_collections.ConfigDict) -> Generator:
  """THE ADAPTER: `config.model` as a Generator over `decode.Decoder`.

  The runtime (`runtime.load(config)`) is loaded on the first call; each call
  encodes `requests[0].prefix` once and decodes every prompt from it, seeded
  per request, `config.augment.batch_size` rows at a time.
  """
  tok = _tokenizer(config.model)

  @functools.cache
  def decoder():
    # pylint: disable=g-import-not-at-top
    from icl_iwl import runtime
    return runtime.decoder(config, runtime.load(config),
                           batch_size=config.augment.batch_size)

  def generate(requests: Sequence[Request], options: Options) -> list[str]:
    from icl_iwl import decode  # pylint: disable=g-import-not-at-top
    if not requests:
      return []
    prefix = requests[0].prefix
    if any(r.prefix != prefix for r in requests):
      raise ValueError('The requests of one call must share their prefix.')
    return decoder().generate(
        [r.prompt for r in requests],
        decode.Options(max_new_tokens=options.max_new_tokens,
                       temperature=options.temperature, stop=options.stop),
        prefix=prefix, seeds=[r.seed for r in requests])

  return Generator(
      name=f'{config.model.preset}:{config.model.checkpoint}',
      generate=generate,
      count_tokens=lambda text: len(tok.encode(text)))
