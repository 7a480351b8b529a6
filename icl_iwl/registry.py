"""One registry pattern for every pluggable part (presets, datasets, samplers, ...).

    PRESETS = Registry('model preset')

    @PRESETS.register('gemma3_270m')
    def gemma3_270m() -> GemmaConfig: ...

    PRESETS.get('gemma3_270m')()   # a misspelt name lists the close valid ones
"""

import difflib
from typing import Callable, Generic, TypeVar

from icl_iwl import errors

T = TypeVar('T', bound=Callable)


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
  """`unknown <kind> 'x'; did you mean ...? valid: ...` for user-facing errors."""
  close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
  hint = f' Did you mean {", ".join(repr(c) for c in close)}?' if close else ''
  return f'Unknown {kind} {name!r}.{hint} Valid: {", ".join(sorted(valid))}.'


class UnknownNameError(errors.UserError, KeyError):
  """A name no registry entry has (a KeyError, shown as its plain message)."""

  def __str__(self) -> str:
    return str(self.args[0])


class Registry(Generic[T]):
  """Maps names to factories; `get` fails with the close valid names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def add(fn: T) -> T:
      if name in self._items:
        raise ValueError(f'{self.kind} {name!r} is registered twice.')
      self._items[name] = fn
      return fn

    return add

  def get(self, name: str) -> T:
    if name not in self._items:
      raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items
