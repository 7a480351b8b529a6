"""Nonsense words: pronounceable, not English, several Gemma pieces, unique."""

import pytest

from icl_iwl.data import tokenizer
from icl_iwl.data import words


@pytest.fixture(scope='module')
def tok():
  return tokenizer.load_default()


@pytest.fixture(scope='module')
def drawn(tok):
  return {ns: words.WordSampler(0, ns, tok).words(300)
          for ns in words.NAMESPACES}


def test_lengths_and_letters(drawn):
  for ws in drawn.values():
    assert all(4 <= len(w) <= 5 and w.isalpha() and w.islower() for w in ws)


def test_no_english_word(drawn):
  for ws in drawn.values():
    assert not any(words.is_english(w) for w in ws)


def test_every_form_is_several_pieces(drawn, tok):
  for ws in drawn.values():
    for w in ws:
      for form in (w, ' ' + w, w.capitalize(), ' ' + w.capitalize()):
        assert len(tok.encode(form)) > 1, form


def test_unique_and_apart_within_a_sampler(drawn):
  for ws in drawn.values():
    assert len(set(ws)) == len(ws)
    for i, a in enumerate(ws):
      for b in ws[i + 1:]:
        assert a not in b and b not in a
        # At least two edits apart: no deletion of one yields the other or a
        # deletion of the other.
        assert not (words._deletions(a) & words._deletions(b)), (a, b)


def test_namespaces_never_share_words(drawn, tok):
  seen = {}
  for ns, ws in drawn.items():
    assert all(words.namespace_of(w) == ns for w in ws)
    for w in ws:
      assert seen.setdefault(w, ns) == ns
  # Other seeds stay in their namespace too.
  other = words.WordSampler(7, 'semantic', tok).words(100)
  assert set(other).isdisjoint(drawn['reversals'])


def test_namespaces_own_disjoint_slots():
  owned = [s for slots in words.NAMESPACES.values() for s in slots]
  assert len(owned) == len(set(owned))
  assert all(0 <= s < words.NUM_SLOTS for s in owned)


def test_adding_a_namespace_keeps_every_existing_word(tok, drawn, monkeypatch):
  free = min(set(range(words.NUM_SLOTS))
             - {s for slots in words.NAMESPACES.values() for s in slots})
  monkeypatch.setattr(words, 'NAMESPACES',
                      {**words.NAMESPACES, 'newcomer': (free,)})
  for ns in ('reversals', 'semantic'):
    assert words.WordSampler(0, ns, tok).words(300) == drawn[ns]
  new = words.WordSampler(0, 'newcomer', tok).words(100)
  assert all(words.namespace_of(w) == 'newcomer' for w in new)
  assert set(new).isdisjoint(w for ws in drawn.values() for w in ws)


def test_exhausted_namespace_fails_instead_of_looping(tok, monkeypatch):
  monkeypatch.setattr(words, '_MAX_TRIES', 1000)
  with pytest.raises(RuntimeError, match='ran out of words'):
    words.WordSampler(0, 'ictrain', tok).word(lengths=(1,))


def test_seeded(tok):
  a = words.WordSampler(3, 'ictrain', tok).words(50)
  assert a == words.WordSampler(3, 'ictrain', tok).words(50)
  assert a != words.WordSampler(4, 'ictrain', tok).words(50)


def test_longer_words_for_names(tok):
  ws = words.WordSampler(0, 'reversal_curse', tok).words(30, (6, 7))
  assert all(len(w) in (6, 7) for w in ws)


def test_filters_reject_known_words(tok):
  assert words.is_english('table') and words.is_english('Dog')
  assert not words.is_english('femp')
  assert not words.is_multi_piece('dog', tok)  # '▁dog' is one piece.
  assert words.is_multi_piece('femp', tok)


def test_unknown_namespace(tok):
  with pytest.raises(ValueError, match='namespace'):
    words.WordSampler(0, 'nope', tok)
