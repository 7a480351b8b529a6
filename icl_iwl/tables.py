"""Markdown tables for the terminal and for docs/ (aligned; numbers right)."""

from typing import Any, Mapping, Sequence


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                   digits: int = 3) -> str:
  """A Markdown table of `rows` (dicts) in `columns`; floats get `digits`."""
  def cell(v: Any) -> str:
    return f'{v:.{digits}f}' if isinstance(v, float) else str(v)

  body = [[cell(r.get(c, '')) for c in columns] for r in rows]
  numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) and rows
             for c in columns]
  widths = [max(len(x) for x in [c, *(b[i] for b in body)])
            for i, c in enumerate(columns)]

  def line(cells: Sequence[str]) -> str:
    return '| ' + ' | '.join(x.rjust(w) if num else x.ljust(w)
                             for x, w, num in zip(cells, widths, numeric)) + ' |'

  rule = '|' + '|'.join('-' * (w + 1) + (':' if num else '-')
                        for w, num in zip(widths, numeric)) + '|'
  return '\n'.join([line(list(columns)), rule, *map(line, body)])
