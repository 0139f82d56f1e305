"""The `mesh` config section: the device mesh as text, parsed against the number of devices present."""

import dataclasses
import math
from typing import Literal

from meshlm.model.errors import ConfigError

# Outermost first: data-parallel axes span hosts; context and tensor, which move activations every layer, stay close.
AXES = ("data", "fsdp", "context", "tensor")
ContextImpl = Literal["ring", "all_gather"]
# Axes over slices (joined by the data-centre network, DCN), in MaxText's names: dcn_AXIS is the outer part of AXIS.
# Only data is offered: one gradient all-reduce per step is traffic DCN can carry, FSDP's gathers are not.
DCN_AXES = ("dcn_data",)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    # "data=2,fsdp=2,tensor=2": absent axes are 1 and one axis may be -1 (the remaining devices). A mesh smaller
    # than the device count uses the first devices; "" is one device, the behaviour before meshes existed.
    # "dcn_data=2,fsdp=-1": data parallel over 2 slices, fsdp inside each (the mesh's data axis is then 2).
    # "data=2,context=4": every sequence split over 4 devices for the whole step (context parallelism).
    shape: str = ""
    sequence_parallel: bool = False  # shard activations between blocks along the sequence over `tensor`
    # How attention reaches the keys of other devices under context=N: passed around a ring of N devices, or gathered
    # whole (cheaper for short rings and few key/value heads, takes any kernel); parallel/context.py.
    context_impl: ContextImpl = "ring"

    @property
    def fixed_devices(self) -> int:
        """The product of the sizes given (not -1): the device count when no axis is -1."""
        return math.prod(s for s in _parse(self.shape).values() if s != -1)

    @property
    def dcn_sizes(self) -> dict[str, int]:
        """{axis: its part over slices} for every axis in AXES; their product is the number of slices."""
        parsed = _parse(self.shape)
        return {a: parsed.get(f"dcn_{a}", 1) for a in AXES}

    def axis_sizes(self, n_devices: int) -> dict[str, int]:
        """{axis: size} for every axis in AXES, the -1 axis resolved and the dcn_ parts multiplied in; the product
        divides n_devices."""
        sizes, known = _parse(self.shape), self.fixed_devices
        if n_devices % known:
            raise ConfigError(
                f"mesh {self.shape!r} needs {known} devices, which does not divide the {n_devices} present; change "
                "--mesh"
            )
        if -1 in sizes.values():
            sizes = {a: n_devices // known if s == -1 else s for a, s in sizes.items()}
        sizes = {a: sizes[a] * sizes.get(f"dcn_{a}", 1) for a in AXES}
        if self.sequence_parallel and sizes["tensor"] == 1:
            raise ConfigError(
                f"mesh.sequence_parallel shards the sequence over the tensor axis, but mesh {self.shape!r} has "
                "tensor=1; add tensor=N"
            )
        return sizes


def _parse(shape: str) -> dict[str, int]:
    sizes = dict.fromkeys(AXES + DCN_AXES, 1)
    seen = []
    for item in filter(None, (x.strip() for x in shape.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in sizes:
            raise ConfigError(
                f"mesh {shape!r}: unknown axis {name!r}; the axes are {', '.join(sizes)} (e.g. data=2,fsdp=2,tensor=2)"
            )
        if name in seen:
            raise ConfigError(f"mesh {shape!r} names axis {name!r} twice")
        try:
            size = int(value)
        except ValueError:
            raise ConfigError(f"mesh {shape!r}: {item!r} is not AXIS=SIZE with an integer size") from None
        if size == 0 or size < -1:
            raise ConfigError(f"mesh {shape!r}: {name}={size}; sizes are positive, or -1 for the remaining devices")
        if size == -1 and name in DCN_AXES:
            raise ConfigError(f"mesh {shape!r}: {name}=-1; give the number of slices")
        seen.append(name)
        sizes[name] = size
    if list(sizes.values()).count(-1) > 1:
        raise ConfigError(f"mesh {shape!r}: only one axis may be -1")
    return sizes
