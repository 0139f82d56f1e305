"""A run's peak device memory beside `meshlm plan`'s prediction for the same config, so a planner that is wrong
for some model or mesh shows up in the run that trusted it."""

import dataclasses

from meshlm.parallel import planner
from meshlm.training.setup import TrainSetup

TOLERANCE = 0.2


@dataclasses.dataclass(frozen=True)
class MemoryCheck:
    peak: float  # bytes per device
    source: str  # where `peak` comes from
    planned: float

    @property
    def ratio(self) -> float:
        return self.peak / self.planned

    def record(self) -> dict[str, float]:
        return {"memory_peak_bytes": self.peak, "memory_planned_bytes": self.planned}

    def warning(self) -> str | None:
        if abs(self.ratio - 1) <= TOLERANCE:
            return None
        return (
            f"warning: peak device memory {self.peak / 2**20:.1f} MiB ({self.source}) is {self.ratio:.2f}x the "
            f"{self.planned / 2**20:.1f} MiB `meshlm plan` predicts for this config; plan slice sizes with care"
        )


def planned_bytes(setup: TrainSetup) -> float:
    """The planner's bytes per device for one full-batch step of this setup's config on its mesh."""
    cfg, mesh = setup.cfg, setup.partitioner.mesh
    device = mesh.devices.flat[0].device_kind
    return planner.plan(cfg.model, setup.ramp.accumulation, cfg.mesh, mesh.size, device, mfu=1.0).total


def measured_peak(setup: TrainSetup) -> tuple[float, str]:
    """The largest peak over this process's devices where the runtime counts allocations (GPU, TPU); elsewhere
    XLA's memory analysis of the compiled full-batch step (after the first step: the compilation is cached)."""
    stats = [d.memory_stats() for d in setup.partitioner.mesh.local_devices]
    if all(s and "peak_bytes_in_use" in s for s in stats):
        return float(max(s["peak_bytes_in_use"] for s in stats)), "device memory_stats peak_bytes_in_use"
    return float(setup.memory_analysis()["total"]), "XLA memory analysis of the compiled step"


def check(setup: TrainSetup) -> MemoryCheck:
    peak, source = measured_peak(setup)
    return MemoryCheck(peak, source, planned_bytes(setup))
