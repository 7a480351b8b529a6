"""A dataset's version changes whenever its data does.

DIGESTS holds, per dataset and version, the sha256 of the canonical JSON of
`generate(SMALL)` and the generator fields of the FULL config. When a
generator's output changes, bump its builder's VERSION (with RELEASE_NOTES)
and add a line for the new version; never edit a line.
"""

import dataclasses
import hashlib
import json

import pytest
import tensorflow_datasets as tfds

from icl_iwl.data import builders

DIGESTS = {
    'reversals': {
        '1.0.0': '39578b4ff44805c798489104d66b4a879c3b51ec6584169395aa4a9709b0476e',
        '2.0.0': 'af3175b663fc11cf85fd6ad36fb895b4212aefb26335f6d90445a1864935fd95',
    },
    'syllogisms': {
        '1.0.0': 'b70066e0d263b9a4f89bfc3bf33237c16052f6766a8d6d6675be7adf7400f241',
        '2.0.0': '2aa51d172ee2ae31e944954fbabbc32ac5d07e240387d96793c6e9252c9822c8',
    },
    'reversal_curse': {
        '1.0.0': '7ab39ab8138e555fa005a1522152b191e81634dd7737bab6b6b5333037495451',
        '2.0.0': '55c4b1d0b7604c095d9567dd32b29bb261f2401af5ca693c5c70fd28c8057b3f',
    },
    'semantic': {
        '1.0.0': 'ec9d30df2fcf550fbb8a191406acf2a84e7ea902a0e97afbca5957b234bd5c90',
        '2.0.0': 'd664dab8eb779c23e1ac7304fea2b1cd519f16ca554326b18c956924e5777db5',
    },
    'ictrain': {
        '1.0.0': '1db9c65bcb7c2b18899f6e055513aec7c61c5fc009f598c5e631dd882c8d75bf',
        '2.0.0': 'a484f09a950a790a7c2fb8ae442641f4a5dc8dc07b12f10cb797fc449a99d85d',
    },
}
_BUILDER_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


def digest(module) -> str:
  """sha256 of generate(SMALL) and FULL's generator fields, as sorted JSON."""
  full = {f.name: getattr(module.FULL, f.name)
          for f in dataclasses.fields(module.FULL)
          if f.name not in _BUILDER_FIELDS}
  data = {'small': module.generate(module.SMALL), 'full_config': full}
  return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def test_every_dataset_is_listed():
  assert sorted(DIGESTS) == builders.DATASETS.names()


@pytest.mark.parametrize('name', sorted(DIGESTS))
def test_data_changes_only_with_a_new_version(name):
  builder = builders.DATASETS.get(name)
  version = str(builder.VERSION)
  got = digest(getattr(builders, name))
  assert version in DIGESTS[name], (
      f'Add DIGESTS[{name!r}][{version!r}] = {got!r}.')
  assert DIGESTS[name][version] == got, (
      f'The {name} data changed: bump {builder.__name__}.VERSION, add '
      f'RELEASE_NOTES, and add DIGESTS[{name!r}][<new version>] = {got!r}.')
  newest = max(DIGESTS[name], key=tfds.core.Version)
  assert version == newest
  assert set(builder.RELEASE_NOTES) == set(DIGESTS[name])


def test_digests_are_distinct_per_version():
  for name, versions in DIGESTS.items():
    assert len(set(versions.values())) == len(versions), name
