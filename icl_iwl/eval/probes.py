"""Multiple-choice items: from probe records (see data/datasets.py), or the
built-in quickstart set."""

from typing import Any, Iterable, Mapping

from icl_iwl.data import schema
from icl_iwl.eval.packing import Item

# General knowledge a pretrained 270M model should mostly get: a smoke test of
# the whole scoring path on the real model, never used to tune anything.
QUICKSTART = (
    Item('The capital of France is', (' Paris', ' Berlin', ' Madrid', ' Rome'), 0, id='capital-fr'),
    Item('The capital of Japan is', (' Seoul', ' Tokyo', ' Beijing', ' Bangkok'), 1, id='capital-jp'),
    Item('Water freezes at a temperature of', (' 100 degrees Celsius', ' 0 degrees Celsius', ' 50 degrees Celsius'), 1, id='freezing'),
    Item('The largest planet in the solar system is', (' Mercury', ' Mars', ' Jupiter', ' Venus'), 2, id='planet'),
    Item('A week has', (' five days', ' seven days', ' ten days', ' twelve days'), 1, id='week'),
    Item('The opposite of hot is', (' cold', ' tall', ' loud', ' green'), 0, id='opposite'),
    Item('Two plus two equals', (' three', ' four', ' five', ' six'), 1, id='arithmetic'),
    Item('Bees make', (' honey', ' milk', ' silk', ' wool'), 0, id='bees'),
    Item('The sun rises in the', (' west', ' north', ' east', ' south'), 2, id='sunrise'),
    Item('Romeo and Juliet was written by', (' Charles Dickens', ' William Shakespeare', ' Jane Austen', ' Mark Twain'), 1, id='author'),
    Item('A triangle has', (' three sides', ' four sides', ' five sides', ' six sides'), 0, id='triangle'),
    Item('The chemical symbol for water is', (' H2O', ' CO2', ' NaCl', ' O3'), 0, id='water'),
)


def item_from_record(record: Mapping[str, Any], context: str = '') -> Item:
  """An Item from an `mc` / `ic_probe` record (raw TFDS bytes or decoded)."""
  r = schema.decode(record)
  return Item(prompt=r['prompt'], choices=tuple(r['choices']), answer=r['answer'],
              context=context, id=r['id'])


def items(records: Iterable[Mapping[str, Any]], context: str = '') -> list[Item]:
  """`item_from_record` of each record."""
  return [item_from_record(r, context) for r in records]
