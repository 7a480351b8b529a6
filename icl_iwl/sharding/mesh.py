"""Device meshes from config data: [('data', -1), ('fsdp', 1), ('tensor', 1)].

-1 means "all remaining devices". A mesh that does not divide the available
devices fails with a message that says how many there are.
"""

import math
from typing import Sequence

import jax
import numpy as np

from icl_iwl.sharding import axes as axes_lib

DEFAULT_MESH = axes_lib.DEFAULT_MESH


def make_mesh(axes: Sequence[tuple[str, int]],
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A mesh with the named axes over `devices` (default: all devices).

  Args:
    axes: (name, size) pairs; at most one size may be -1 (the rest).
    devices: the devices to use.

  Returns:
    a `jax.sharding.Mesh`.

  Raises:
    ValueError: if the sizes do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = [name for name, _ in axes]
  sizes = [int(size) for _, size in axes]
  described = ', '.join(f'{n}={s}' for n, s in zip(names, sizes))
  if len(set(names)) != len(names):
    raise ValueError(f'Mesh axes repeat a name: {described}.')
  if sizes.count(-1) > 1:
    raise ValueError(f'At most one mesh axis may be -1: {described}.')
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes) or len(devices) % known:
    raise ValueError(
        f'Mesh ({described}) does not divide the {len(devices)} available '
        f'{devices[0].platform} devices.')
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f'Mesh ({described}) uses {math.prod(sizes)} devices but '
        f'{len(devices)} {devices[0].platform} devices are available; use -1 '
        'for one axis to take the rest.')
  return jax.sharding.Mesh(np.asarray(devices).reshape(sizes), names)


def batch_divisor(mesh: jax.sharding.Mesh, rules) -> int:
  """How many shards the 'batch' logical axis is split into on this mesh."""
  mesh_axes = dict(rules).get(axes_lib.BATCH)
  if mesh_axes is None:
    return 1
  mesh_axes = (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes
  return math.prod(mesh.shape[a] for a in mesh_axes)
