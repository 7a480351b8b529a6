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
    'test_gemma3_270m.py': 'real_model',
    'test_jobs.py': 'e2e',
    'test_lm_eval.py': 'parity',
    'test_loss.py': 'parity',
    'test_model.py': 'parity',
    'test_notebooks.py': 'e2e',
    'test_scoring.py': 'parity',
    'test_train.py': 'e2e',
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  for item in items:
    if not any(item.get_closest_marker(tier) for tier in TIERS):
      item.add_marker(_FILE_TIER.get(item.path.name, 'unit'))
