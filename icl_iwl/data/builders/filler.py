"""Neutral filler sentences from small templates: preambles and padding.

They state nothing about any generated entity's properties or relations, use
no comparatives, and never contain a nonsense word except through `about`,
which only says that an entity is studied or mentioned.
"""

import random

_TIMES = (
    'Yesterday', 'Last spring', 'On Monday', 'Early in the morning',
    'After lunch', 'Later that week', 'In the evening', 'At dawn',
    'Around noon', 'Some years ago', 'During the holidays',
    'On a rainy afternoon', 'Before the meeting', 'At the weekend',
)
_SUBJECTS = (
    'the committee', 'a neighbour', 'the librarian', 'my cousin',
    'the old teacher', 'a group of students', 'the travellers', 'the gardener',
    'the baker', 'our guide', 'the new clerk', 'a local farmer', 'the choir',
    'two friends',
)
_ACTIONS = (
    'met in the library', 'walked along the river', 'painted the fence',
    'read a long letter', 'planted some tulips', 'cleaned the windows',
    'wrote a short note', 'visited the museum', 'repaired a bicycle',
    'sang a quiet song', 'baked fresh bread', 'sorted old photographs',
    'crossed the bridge', 'tidied the shed', 'listened to the radio',
    'waited for the train',
)
_PLACES = (
    'The market', 'The station', 'The park', 'The harbour',
    'The village square', 'The school hall', 'The reading room', 'The bakery',
    'The old mill', 'The garden',
)
_STATES = (
    'quiet', 'busy', 'crowded', 'empty', 'warm', 'cold', 'noisy', 'peaceful',
    'closed', 'freshly painted',
)
_WHENS = (
    'that afternoon', 'all morning', 'for most of the day', 'on Sunday',
    'after the storm', 'during the festival', 'at midnight', 'in early autumn',
)
_THINGS = (
    'a blue umbrella', 'a pile of books', 'a sleeping cat', 'an empty basket',
    'a paper kite', 'a bowl of apples', 'a wooden chair', 'a folded map',
)
_WHERES = (
    'by the door', 'on the table', 'near the window', 'in the hallway',
    'under the stairs', 'beside the fountain', 'on the porch',
)
_ABOUT = (
    '{x} have been described in many field guides.',
    'Little is known about where the name {x} comes from.',
    'Several museums hold specimens of {x}.',
    '{x} are often mentioned in old travel journals.',
    'Naturalists continue to study {x}.',
    'The first written account of {x} dates back many years.',
    'Photographs of {x} are rare.',
    'Many people have never seen {x} in person.',
    'Some collectors keep detailed notes on {x}.',
    'A short film about {x} was shown at the village hall.',
    'Children often learn about {x} at school.',
    'Local guides sometimes point out {x} to visitors.',
)


def sentence(rng: random.Random) -> str:
  """One neutral sentence about everyday scenes."""
  form = rng.randrange(3)
  if form == 0:
    when, who, what = (rng.choice(_TIMES), rng.choice(_SUBJECTS),
                       rng.choice(_ACTIONS))
    return f'{when}, {who} {what}.'
  if form == 1:
    where, state, when = (rng.choice(_PLACES), rng.choice(_STATES),
                          rng.choice(_WHENS))
    return f'{where} was {state} {when}.'
  return f'There was {rng.choice(_THINGS)} {rng.choice(_WHERES)}.'


def sentences(rng: random.Random, n: int) -> list[str]:
  """`n` neutral sentences, no two alike."""
  out: list[str] = []
  while len(out) < n:
    s = sentence(rng)
    if s not in out:
      out.append(s)
  return out


def about(rng: random.Random, x: str) -> str:
  """A neutral sentence that mentions entity `x` without stating a fact."""
  return rng.choice(_ABOUT).format(x=x)
