"""Where runs execute: here, one at a time (local), or one Ray task per run on its own worker (ray).

Both hand each finished run's RunResult (or its exception) back to the driver, which alone writes the store.
Ray does the fan-out and the placement; the driver only keeps `slots` runs in flight.
"""

import dataclasses
import os
from typing import Protocol

from meshlm.experiments.sweep.execute import execute
from meshlm.experiments.sweep.store import RunResult
from meshlm.model.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Job:
    run_id: str
    config: dict
    run_dir: str
    tokenizer: str
    compile_cache: str = ""  # a JAX persistent compilation cache directory, "" = none


Outcome = RunResult | BaseException


class Launcher(Protocol):
    slots: int  # runs the driver keeps in flight

    def submit(self, job: Job) -> None: ...

    def wait(self) -> tuple[Job, Outcome]: ...  # the next finished job

    def close(self) -> None: ...


class LocalLauncher:
    """In the driver's process, one run at a time: `wait` runs the oldest submitted job."""

    slots = 1

    def __init__(self):
        self._queue: list[Job] = []

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def wait(self) -> tuple[Job, Outcome]:
        job = self._queue.pop(0)
        try:
            return job, execute(job.config, job.run_dir, job.tokenizer, job.compile_cache)
        except Exception as e:  # the sweep goes on; the store records the failure
            return job, e

    def close(self) -> None:
        self._queue.clear()


class RayLauncher:
    """Each run a Ray task in a fresh worker process (max_calls=1: no JAX state carries over between runs)."""

    def __init__(self, address: str = "", cpus_per_run: float = 1.0, gpus_per_run: float = 0.0):
        try:
            import ray  # deferred: an optional extra (pip install 'meshlm[ray]'), heavy to import
        except ImportError:
            raise ConfigError("--launcher ray needs Ray; pip install 'meshlm[ray]' or use --launcher local") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
        # Workers import meshlm from the driver's environment; MESHLM_* and XLA_FLAGS travel with the task.
        env = {k: v for k, v in os.environ.items() if k.startswith(("MESHLM_", "XLA_", "JAX_", "TFDS_"))}
        self._remote = ray.remote(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_calls=1, runtime_env={"env_vars": env}
        )(execute)
        resources = ray.cluster_resources()
        fits = [resources.get("CPU", 0) / cpus_per_run] if cpus_per_run else []
        fits += [resources.get("GPU", 0) / gpus_per_run] if gpus_per_run else []
        self.slots = max(1, int(min(fits, default=1)))
        self._in_flight: dict = {}

    def submit(self, job: Job) -> None:
        self._in_flight[self._remote.remote(job.config, job.run_dir, job.tokenizer, job.compile_cache)] = job

    def wait(self) -> tuple[Job, Outcome]:
        ready, _ = self._ray.wait(list(self._in_flight), num_returns=1)
        job = self._in_flight.pop(ready[0])
        try:
            return job, self._ray.get(ready[0])
        except Exception as e:  # a RayTaskError wraps the run's own exception
            return job, e

    def close(self) -> None:
        for ref in self._in_flight:
            self._ray.cancel(ref, force=True)
        self._in_flight.clear()
        if self._owns:
            self._ray.shutdown()


def make(kind: str, address: str = "", cpus_per_run: float = 1.0, gpus_per_run: float = 0.0) -> Launcher:
    if kind == "local":
        return LocalLauncher()
    if kind == "ray":
        return RayLauncher(address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    raise ConfigError(f"unknown launcher {kind!r}; use local or ray")
