"""The one exception type for mistakes in what the user gave us.

A `UserError` (a bad config value, a malformed input line, a missing
checkpoint, a workdir that holds another run) is reported by the commands as
one line saying what is wrong and where, without a traceback; any other
exception is a bug and keeps its traceback.
"""

import functools
import sys
from typing import Any, Callable

from absl import flags

EXIT_USER_ERROR = 2  # Exit status of a command stopped by a UserError.


class UserError(ValueError):
  """A problem with the user's input, explained in its message."""


def main_wrapper(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
  """An absl `main` that reports a UserError as one line and exits with 2.

  `--verbosity=1` (or higher) shows the traceback too. Any other exception
  propagates with its traceback: it is a bug.
  """

  @functools.wraps(main)
  def wrapped(argv: list[str]) -> Any:
    try:
      return main(argv)
    except UserError as e:
      if flags.FLAGS.is_parsed() and flags.FLAGS.verbosity >= 1:
        raise
      print(f'FATAL: {e}', file=sys.stderr)
      sys.exit(EXIT_USER_ERROR)

  return wrapped
