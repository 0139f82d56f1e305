"""Meshes over several slices: each slice's devices make the inner (ICI) part of every mesh axis and the slices the
outer (DCN) part, so only an axis given a dcn_ part crosses the data-centre network."""

import collections
import math
from collections.abc import Callable

import numpy as np
from jax.experimental import mesh_utils

from meshlm.model.errors import ConfigError
from meshlm.parallel.config import AXES, MeshConfig


def slice_index(device) -> int:
    """A device's slice: its `slice_index` where it has one (TPUs); elsewhere (CPUs) its process, as with MaxText's
    process_is_granule."""
    return getattr(device, "slice_index", device.process_index)


def device_grid(cfg: MeshConfig, sizes: dict[str, int], devices, slice_of: Callable = slice_index) -> np.ndarray:
    """All `devices` in an array of the mesh's shape, slice-major along each axis with a dcn_ part (jax's
    create_hybrid_device_mesh orders them); `slice_of(device)` says which slice a device is in."""
    dcn = cfg.dcn_sizes
    n_slices, used = math.prod(dcn.values()), math.prod(sizes.values())
    if used != len(devices):
        raise ConfigError(
            f"mesh {cfg.shape!r} uses {used} of the {len(devices)} devices, but a mesh over slices must use all of "
            "them; use -1 for one axis"
        )
    per_slice = collections.Counter(map(slice_of, devices))
    if len(per_slice) != n_slices:
        fix = "drop dcn_data" if len(per_slice) == 1 else f"set dcn_data={len(per_slice)}"
        raise ConfigError(
            f"mesh {cfg.shape!r} spreads data over {n_slices} slices, but the {len(devices)} devices lie in "
            f"{len(per_slice)}; {fix}"
        )
    if len(set(per_slice.values())) > 1:
        raise ConfigError(
            f"mesh {cfg.shape!r} needs slices of equal size, but they hold {sorted(per_slice.values())} devices; "
            "use the same slice shape throughout"
        )
    seen = [_InSlice(d, slice_of(d)) for d in devices]
    # The unsplit layout of each slice's torus where one exists (as jax.make_mesh), a split one rather than an error.
    grid = mesh_utils.create_hybrid_device_mesh(
        [sizes[a] // dcn[a] for a in AXES], [dcn[a] for a in AXES], seen, allow_split_physical_axes=True
    )
    return np.vectorize(lambda d: d.device, otypes=[object])(grid)


class _InSlice:
    """A device as create_hybrid_device_mesh reads it, its `slice_index` from `slice_of`; everything else (kind,
    platform, TPU coordinates) is the device's own, so each slice is still laid out along its links."""

    def __init__(self, device, slice_index: int):
        self.device, self.slice_index = device, slice_index

    def __getattr__(self, name: str):
        return getattr(self.device, name)
