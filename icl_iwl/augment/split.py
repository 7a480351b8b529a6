"""Sentence splitting of documents, with the maintained segmenter `pysbd`.

    split.sentences('Dr. Lee came. He sat.')  # ['Dr. Lee came.', 'He sat.']
    split.pieces(text, 'independent')  # each sentence on its own
    split.pieces(text, 'cumulative')   # each prefix: s1, s1 s2, s1 s2 s3, ...

A cumulative piece is the document's own text up to the end of a sentence,
spacing included. pysbd keeps abbreviations ("Dr.", "e.g.") and decimals
inside sentences; a question mark ends one ("Ever heard of Logan George?
They're the ..." is two sentences, which is why the reversal-curse config
augments whole documents).
"""

import functools

import pysbd

MODES = ('independent', 'cumulative')


@functools.cache
def _segmenter() -> pysbd.Segmenter:
  return pysbd.Segmenter(language='en', clean=False, char_span=True)


@functools.lru_cache(maxsize=65536)
def _spans(text: str) -> tuple[tuple[int, int], ...]:
  """(start, end) of each non-empty sentence of `text`, whitespace trimmed."""
  spans = []
  for span in _segmenter().segment(text):
    sentence = span.sent
    if sentence.strip():
      start = span.start + len(sentence) - len(sentence.lstrip())
      spans.append((start, span.start + len(sentence.rstrip())))
  return tuple(spans)


def sentences(text: str) -> list[str]:
  """The sentences of `text`, whitespace trimmed."""
  return [text[start:end] for start, end in _spans(text)]


def pieces(text: str, mode: str) -> list[str]:
  """The sentences of `text` ('independent') or its prefixes ending at each
  sentence's end ('cumulative')."""
  spans = _spans(text)
  if mode == 'independent':
    return [text[start:end] for start, end in spans]
  if mode == 'cumulative':
    return [text[spans[0][0]:end] for _, end in spans]
  raise ValueError(f'Unknown split mode {mode!r}; use one of {MODES}.')
