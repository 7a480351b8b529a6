"""Test setup: 8 fake CPU devices (a fake TPU slice), strict rank promotion,
and the test tiers as markers.

Tiers (`pytest -m unit`, `-m "not real_model"`, ...), fastest first:
  unit        no model, or a tiny one for a moment: data, configs, launch,
              reliability;
  parity      our numerics against an independent reference (transformers,
              autodiff, an unshared scorer) on tiny models;
  e2e         whole jobs on the tiny presets with 8 fake devices: training,
              resume, the jobs, the notebooks;
  real_model  the real Gemma 3 270M (several minutes, several GB).
A test file's tier is below; a test marked with another tier keeps its own.
The real-model tests of all files run one after another in one worker, then
the end-to-end tests, while the other worker runs the unit and parity tests:
the real 270M and transformers' copy of it (`real_rt`, `real_reference`,
`real_hf_tokenizer`) are loaded once, shared, and dropped after the last
real-model test.
"""

import ctypes
import ctypes.util
import gc
import os
import resource
import shutil
import sys
import tempfile

# Must happen before jax is imported anywhere.
os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)
# One persistent compilation cache per run, made by the first process
# (pytest, or xdist's controller) and inherited by the workers and by the
# subprocesses tests start: a program the tiny model needs in many tests and
# jobs compiles once. Removed at the end of the run (`pytest_unconfigure`).
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _OWN_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='icl_iwl-jax-cache-')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.3'
# With as many xdist workers as cores (pytest.ini: 2 on CI's 2 cores), torch's
# OpenMP threads beyond one per worker only spin against the other worker:
# transformers' greedy generate on the 270M ran 3-4x slower with 2 threads
# than with 1 beside a busy core.
if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')) >= (os.cpu_count() or 1):
  os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_platforms', 'cpu')

TIERS = ('unit', 'parity', 'e2e', 'real_model')
_FILE_TIER = {
    'test_checkpoints.py': 'parity',
    'test_decode.py': 'parity',
    'test_export.py': 'parity',
    'test_gemma3_270m.py': 'real_model',
    'test_ictrain_experiment.py': 'e2e',
    'test_jobs.py': 'e2e',
    'test_lm_eval.py': 'parity',
    'test_loss.py': 'parity',
    'test_model.py': 'parity',
    'test_notebooks.py': 'e2e',
    'test_scan.py': 'parity',
    'test_scoring.py': 'parity',
    'test_train.py': 'e2e',
}


def _tier(item: pytest.Item) -> str:
  return next((t for t in TIERS if item.get_closest_marker(t)), 'unit')


@pytest.hookimpl(tryfirst=True)  # Before xdist reads the groups.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  for item in items:
    if not any(item.get_closest_marker(tier) for tier in TIERS):
      item.add_marker(_FILE_TIER.get(item.path.name, 'unit'))
    # With `-n 2 --dist loadgroup` (pytest.ini) a file runs in one worker,
    # so its module fixtures are built once; the heavy tiers (whole jobs,
    # subprocesses, the real 270M) run one after another in one worker, so
    # that two of them never hold memory at once: the 270M is loaded once.
    heavy = _tier(item) in ('e2e', 'real_model')
    item.add_marker(pytest.mark.xdist_group('heavy' if heavy else item.path.name))
  # The heavy group first, so that it runs beside the rest; then by tier.
  order = ('real_model', 'e2e', 'unit', 'parity')
  items.sort(key=lambda item: order.index(_tier(item)))  # Stable: file order within.


_LIBC = ctypes.CDLL(ctypes.util.find_library('c'))


def _trim() -> None:
  """Hands the heap that Python and numpy freed back to the OS where glibc
  would keep it for reuse (a no-op on other C libraries)."""
  if hasattr(_LIBC, 'malloc_trim'):
    _LIBC.malloc_trim(0)


_REAL: dict[str, object] = {}  # The real-model objects, while their tests run.


def _real(name: str, load):
  if name not in _REAL:
    _REAL[name] = load()
  return _REAL[name]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
  """Drops the real-model objects after the last real-model test."""
  del item
  if _REAL and (nextitem is None or _tier(nextitem) != 'real_model'):
    _REAL.clear()
    gc.collect()
    _trim()


@pytest.fixture
def real_rt():
  return _real('rt', _load_real_rt)


def _load_real_rt():
  """The embedded Gemma 3 270M in float32 as a runtime on one device (the 8
  fake devices would hold 8 replicas), with a `score` config; ~1.1 GB."""
  from icl_iwl import config_lib  # pylint: disable=g-import-not-at-top
  from icl_iwl import runtime  # pylint: disable=g-import-not-at-top
  from icl_iwl.checkpoints import gguf  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import tokenizer  # pylint: disable=g-import-not-at-top
  from icl_iwl.model import gemma  # pylint: disable=g-import-not-at-top
  from icl_iwl.sharding import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from icl_iwl.sharding import rules as rules_lib  # pylint: disable=g-import-not-at-top

  config = config_lib.base('score')
  config.model = config_lib.model('gemma3_270m', 'embedded', 'float32')
  config.scorer = config_lib.scorer()
  model_config, params = gguf.load_embedded()
  device = jax.devices()[0]
  return runtime.Runtime(
      config, mesh_lib.make_mesh(mesh_lib.DEFAULT_MESH, [device]),
      rules_lib.DEFAULT_RULES, gemma.Transformer(model_config),
      jax.device_put(params, device), tokenizer.load_default())


@pytest.fixture
def real_reference():
  return _real('reference', _load_real_reference)


def _load_real_reference():
  """transformers' own load of the embedded GGUF, float32, eval mode (~1.1 GB)."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  from icl_iwl import paths  # pylint: disable=g-import-not-at-top

  import gguf  # pylint: disable=g-import-not-at-top

  # transformers parses the file with gguf-py twice (config, then tensors),
  # ~20 s each for the 262k vocabulary strings: the second parse reuses the
  # first (still gguf-py's, so the reference stays independent of our reader).
  parsed = {}
  def reader(path, mode='r'):
    if (str(path), mode) not in parsed:
      parsed[str(path), mode] = parse(path, mode)
    return parsed[str(path), mode]

  path, parse = paths.embedded_gguf(), gguf.GGUFReader
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(gguf, 'GGUFReader', reader)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32)
  del parsed
  gc.collect()  # Whatever the GGUF load left in reference cycles.
  return model.eval()


@pytest.fixture
def real_hf_tokenizer():
  return _real('hf_tokenizer', _load_real_hf_tokenizer)


def _load_real_hf_tokenizer():
  """transformers' tokenizer converted from the embedded GGUF (a minute the
  first time; the real export test's conversion is cached and reused)."""
  transformers = pytest.importorskip('transformers')
  from icl_iwl import export  # pylint: disable=g-import-not-at-top
  from icl_iwl import paths  # pylint: disable=g-import-not-at-top

  return transformers.AutoTokenizer.from_pretrained(
      export.hf_tokenizer_dir(paths.embedded_gguf()))


_TIER_SECONDS: dict[str, float] = {}
_TIER_COUNTS: dict[str, int] = {}


@pytest.fixture(autouse=True, scope='module')
def _free_what_a_test_file_kept():
  """After each test file: its functools caches (tiny runtimes, decoders,
  jitted functions) and JAX's compiled programs are dropped, so a worker's
  memory does not grow file after file."""
  yield
  for module in list(sys.modules.values()):
    name = getattr(module, '__name__', '')
    if name.startswith('test_') or name.startswith('tests.'):
      for value in list(vars(module).values()):
        if callable(getattr(value, 'cache_clear', None)):
          value.cache_clear()
  jax.clear_caches()
  gc.collect()
  _trim()


_PEAKS: list[tuple[float, str]] = []  # (process peak GB after a test, test).


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  """Attaches the process's peak resident memory so far to each report (also
  from xdist workers)."""
  outcome = yield
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  outcome.get_result().user_properties.append(('peak_gb', peak_gb))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
  """Adds each test's setup + call + teardown time to its tier's total."""
  tier = next((t for t in TIERS if t in report.keywords), 'unit')
  _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
  if report.when == 'call':
    _TIER_COUNTS[tier] = _TIER_COUNTS.get(tier, 0) + 1
  peak = dict(report.user_properties).get('peak_gb')
  if peak is not None:
    _PEAKS.append((peak, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
  """One line with the time of each tier, one with the tests after which a
  process's peak memory was highest (recorded in docs/benchmarks.md)."""
  if _TIER_COUNTS:
    terminalreporter.write_line('tiers: ' + ', '.join(
        f'{t} {_TIER_COUNTS.get(t, 0)} tests {_TIER_SECONDS.get(t, 0.0):.0f} s'
        for t in TIERS))
  if _PEAKS:
    first = {}  # Each peak value, with the first test after which it stood;
    for peak, nodeid in _PEAKS:
      first.setdefault(round(peak, 2), nodeid)
    top, seen = [], set()  # a test once (its setup and call report the same peak).
    for peak, nodeid in sorted(first.items(), reverse=True):
      if nodeid not in seen and len(top) < 5:
        top.append((peak, nodeid))
        seen.add(nodeid)
    terminalreporter.write_line('peak memory (GB, per process) first reached in: ' +
                                '; '.join(f'{p:.2f} {n}' for p, n in top))


def pytest_unconfigure(config) -> None:
  del config
  if _OWN_CACHE:
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
