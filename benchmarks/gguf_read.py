r"""Opening a GGUF file: ours (`checkpoints.gguf_file`) vs gguf-py's `GGUFReader`.

    python benchmarks/gguf_read.py [--path=FILE.gguf] [--repeats=3]

Both parse the metadata and map the tensors of the same file (default: the
embedded Gemma 3 270M, 262,144 vocabulary entries); `--repeats` timed opens
each, alternating, medians reported. Then, in the same run, what a user
waits for on a fresh machine: the embedded model's tokenizer rebuilt from the
GGUF and its weights converted (`load.load` of `embedded` with an empty
`$ICL_IWL_CACHE`, a temporary directory). The fields, their types and every
tensor view are checked equal between the two readers.

The last stdout line is one JSON object: {"benchmark": "gguf_read",
"ours_s", "ref_s", "ratio" (ref / ours), "target": 10, "fields_equal",
"first_load_s", "machine"}.
"""

import json
import os
import statistics
import tempfile

from absl import app
from absl import flags
import gguf
import numpy as np

import common  # benchmarks/common.py: a script's own directory is on sys.path.
from icl_iwl import paths
from icl_iwl.checkpoints import gguf_file

_PATH = flags.DEFINE_string('path', None, 'A GGUF file (default: the embedded 270M).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed opens per reader (median).')
_TARGET = 10.0


def _equal(ours: gguf_file.GGUFFile, theirs: gguf.GGUFReader) -> bool:
  keys = [k for k in theirs.fields if not k.startswith('GGUF.')]
  if list(ours.fields) != keys:
    return False
  if any(ours.fields[k].types != theirs.fields[k].types
         or ours.fields[k].contents() != theirs.fields[k].contents() for k in keys):
    return False
  return len(ours.tensors) == len(theirs.tensors) and all(
      a.name == b.name and a.tensor_type == b.tensor_type
      and a.data.shape == b.data.shape and np.array_equal(a.data, b.data)
      for a, b in zip(ours.tensors, theirs.tensors))


def _first_load() -> float:
  """Seconds to build the embedded model's tokenizer and weights from the
  GGUF into an empty cache, then load them."""
  with tempfile.TemporaryDirectory() as cache:
    os.environ['ICL_IWL_CACHE'] = cache
    from icl_iwl import config_lib  # pylint: disable=g-import-not-at-top
    from icl_iwl.checkpoints import load  # pylint: disable=g-import-not-at-top
    _, seconds = common.timed(lambda: load.load(
        config_lib.model('gemma3_270m', 'embedded', 'float32')))
  return seconds


def main(argv):
  del argv
  path = _PATH.value or str(paths.embedded_gguf())
  ours_s, ref_s = [], []
  for _ in range(_REPEATS.value):
    ours, seconds = common.timed(lambda: gguf_file.GGUFFile(path))
    ours_s.append(seconds)
    theirs, seconds = common.timed(lambda: gguf.GGUFReader(path))
    ref_s.append(seconds)
  equal = _equal(ours, theirs)
  del ours, theirs
  first = _first_load() if _PATH.value is None else None
  ours_med, ref_med = statistics.median(ours_s), statistics.median(ref_s)
  print(json.dumps({
      'benchmark': 'gguf_read', 'path': path, 'bytes': os.path.getsize(path),
      'ours_s': round(ours_med, 3), 'ref_s': round(ref_med, 3),
      'ratio': round(ref_med / ours_med, 1), 'target': _TARGET,
      'meets_target': ref_med / ours_med >= _TARGET, 'fields_equal': equal,
      'ours_runs_s': [round(s, 3) for s in ours_s], 'ref_runs_s': [round(s, 3) for s in ref_s],
      'first_load_s': None if first is None else round(first, 1),
      'machine': common.machine()}))


if __name__ == '__main__':
  app.run(main)
