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
"""

import os

# Must happen before jax is imported anywhere.
os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  for item in items:
    if not any(item.get_closest_marker(tier) for tier in TIERS):
      item.add_marker(_FILE_TIER.get(item.path.name, 'unit'))


_TIER_SECONDS: dict[str, float] = {}
_TIER_COUNTS: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
  """Adds each test's setup + call + teardown time to its tier's total."""
  tier = next((t for t in TIERS if t in report.keywords), 'unit')
  _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
  if report.when == 'call':
    _TIER_COUNTS[tier] = _TIER_COUNTS.get(tier, 0) + 1


def pytest_terminal_summary(terminalreporter) -> None:
  """One line with the time of each tier (recorded in docs/benchmarks.md)."""
  if _TIER_COUNTS:
    terminalreporter.write_line('tiers: ' + ', '.join(
        f'{t} {_TIER_COUNTS.get(t, 0)} tests {_TIER_SECONDS.get(t, 0.0):.0f} s'
        for t in TIERS))
