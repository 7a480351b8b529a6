"""Seeded pronounceable nonsense words that are no English word and no token.

    sampler = WordSampler(seed=0, namespace='reversals')
    sampler.words(3)          # e.g. ['femp', 'glon', 'yomp']
    sampler.words(2, (6, 7))  # longer words, e.g. for surnames

A word is built from syllables (onset, vowel, optional middle consonant and
vowel, optional coda) and kept only if it

  * has the requested length (4-5 letters by default),
  * is not in an English word list (the web2 and GCIDE lists of the
    `english-words` package) and contains no stoplisted string,
  * tokenizes to several Gemma pieces in each of the forms 'word', ' word',
    'Word' and ' Word', so the model cannot know it as a single token,
  * is at least two edits away from, and neither contains nor is contained in,
    every word this sampler already gave out,
  * falls into this sampler's namespace: a stable hash of the word picks one
    of `NUM_SLOTS` slots, and each dataset owns fixed slots, so datasets built
    from any seeds never share a word, and adding a dataset (on free slots)
    changes no existing dataset's words.
"""

import functools
import random
import zlib

from english_words import get_english_words_set

from icl_iwl.data import tokenizer as tokenizer_lib

NUM_SLOTS = 32
# Namespace -> the hash slots it owns. Never change an entry (that changes the
# dataset's words); a new dataset takes slots that no entry holds.
NAMESPACES: dict[str, tuple[int, ...]] = {
    'reversals': (0,),
    'syllogisms': (1,),
    'reversal_curse': (2,),
    'semantic': (3, 4),
    'ictrain': (5,),
}
# Candidates drawn for one word before a sampler gives up: a namespace of one
# slot holds about a thousand words that are two edits apart.
_MAX_TRIES = 200_000

_ONSETS = (
    'b c d f g h j k l m n p r s t v w y z '
    'bl br cl cr dr fl fr gl gr kl pl pr sk sl sn sp st tr vr zl'
).split()
_VOWELS = tuple('aeiou')
_MIDDLES = tuple('bdfgklmnprstvz')
_CODAS = (
    'b d f g k l m n p r s t x z ff mp nd nk nt rb rk rn sk sp st lk lt lp'
).split()
# Substrings that read as slurs, profanity or brand names in generated text.
_STOPLIST = (
    'fag', 'fuk', 'fuc', 'cum', 'cok', 'kok', 'dik', 'tit', 'nig', 'gay',
    'sex', 'porn', 'nazi', 'rape', 'shit', 'piss', 'dam', 'hel', 'god', 'jew',
    'kill', 'slut', 'poo', 'puk', 'isis', 'skank', 'anal', 'butt',
)


@functools.cache
def _english() -> frozenset[str]:
  return frozenset(get_english_words_set(['web2', 'gcide'], lower=True))


def namespace_of(word: str) -> str | None:
  """The dataset namespace that owns `word` (by a stable hash), if any."""
  slot = zlib.crc32(word.lower().encode()) % NUM_SLOTS
  return next((ns for ns, slots in NAMESPACES.items() if slot in slots), None)


def is_english(word: str) -> bool:
  """Whether `word` is an English word or contains a stoplisted string."""
  word = word.lower()
  return word in _english() or any(s in word for s in _STOPLIST)


def is_multi_piece(word: str, tokenizer: tokenizer_lib.Tokenizer) -> bool:
  """Whether `word` is >1 piece in both casings, with and without a space."""
  forms = (word.lower(), word.capitalize())
  return all(
      len(tokenizer.encode(prefix + form, add_bos=False)) > 1
      for form in forms for prefix in ('', ' ')
  )


def _substrings(word: str) -> set[str]:
  n = len(word)
  return {word[i:j] for i in range(n) for j in range(i + 4, n + 1)}


def _deletions(word: str) -> set[str]:
  return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


class WordSampler:
  """Draws unique nonsense words for one dataset, deterministically."""

  def __init__(
      self,
      seed: int,
      namespace: str,
      tokenizer: tokenizer_lib.Tokenizer | None = None,
  ):
    if namespace not in NAMESPACES:
      raise ValueError(
          f'Unknown namespace {namespace!r}; use one of {list(NAMESPACES)}.')
    self._rng = random.Random(f'{namespace}:{seed}')
    self._namespace = namespace
    self._tokenizer = tokenizer or tokenizer_lib.load_default()
    self._given: set[str] = set()
    # Every substring (length >= 4) of a given word.
    self._parts: set[str] = set()
    # Each given word and its one-letter deletions: two words within one edit
    # of each other share one of these keys.
    self._near: set[str] = set()

  def _candidate(self) -> str:
    rng = self._rng
    word = rng.choice(_ONSETS) + rng.choice(_VOWELS)
    if rng.random() < 0.5:
      word += rng.choice(_MIDDLES) + rng.choice(_VOWELS)
    if rng.random() < 0.7:
      word += rng.choice(_CODAS)
    return word

  def _acceptable(self, word: str) -> bool:
    if (not self._near.isdisjoint(_deletions(word)) or word in self._parts
        or not self._given.isdisjoint(_substrings(word))):
      return False
    return (namespace_of(word) == self._namespace and not is_english(word)
            and is_multi_piece(word, self._tokenizer))

  def word(self, lengths: tuple[int, ...] = (4, 5)) -> str:
    """One new lowercase word whose length is in `lengths`.

    Raises:
      RuntimeError: if the namespace has no new word left to give.
    """
    for _ in range(_MAX_TRIES):
      word = self._candidate()
      if len(word) in lengths and self._acceptable(word):
        break
    else:
      raise RuntimeError(
          f'Namespace {self._namespace!r} ran out of words after '
          f'{len(self._given)}; give it another slot in words.NAMESPACES.')
    self._given.add(word)
    self._near.update(_deletions(word))
    self._parts.update(_substrings(word))
    return word

  def words(self, n: int, lengths: tuple[int, ...] = (4, 5)) -> list[str]:
    """`n` new lowercase words whose lengths are in `lengths`."""
    return [self.word(lengths) for _ in range(n)]
