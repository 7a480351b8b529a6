"""A dataset's version changes whenever its data does.

DIGESTS holds, per dataset and version, a sha256 of the canonical JSON of
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
        '1.0.0': '39578b4ff44805c798489104d66b4a87',
        '2.0.0': 'af3175b663fc11cf85fd6ad36fb895b4',
    },
    'syllogisms': {
        '1.0.0': 'b70066e0d263b9a4f89bfc3bf33237c1',
        '2.0.0': '2aa51d172ee2ae31e944954fbabbc32a',
    },
    'reversal_curse': {
        '1.0.0': '7ab39ab8138e555fa005a1522152b191',
        '2.0.0': '55c4b1d0b7604c095d9567dd32b29bb2',
    },
    'semantic': {
        '1.0.0': 'ec9d30df2fcf550fbb8a191406acf2a8',
        '2.0.0': 'd664dab8eb779c23e1ac7304fea2b1cd',
    },
    'ictrain': {
        '1.0.0': '1db9c65bcb7c2b18899f6e055513aec7',
        '2.0.0': 'a484f09a950a790a7c2fb8ae442641f4',
    },
}
_BUILDER_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


def digest(module) -> str:
  """sha256 (128 bits) of generate(SMALL) and FULL's generator fields."""
  full = {f.name: getattr(module.FULL, f.name)
          for f in dataclasses.fields(module.FULL)
          if f.name not in _BUILDER_FIELDS}
  data = {'small': module.generate(module.SMALL), 'full_config': full}
  text = json.dumps(data, sort_keys=True).encode()
  return hashlib.sha256(text).hexdigest()[:32]


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
