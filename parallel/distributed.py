"""Several processes, one program: joining them into one JAX runtime, and the few host-side collectives we need.

A process learns its place from flags (meshlm train --coordinator --num-processes --process-id) or from the
environment (MESHLM_COORDINATOR, MESHLM_NUM_PROCESSES, MESHLM_PROCESS_ID, MESHLM_CPU_DEVICES). The coordinator
"auto" lets JAX detect a Cloud TPU slice, SLURM, Open MPI or Kubernetes job by itself.
"""

import dataclasses
import functools
import itertools
import json
import os
from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint import multihost as orbax_multihost

from meshlm.model.errors import ConfigError
from meshlm.parallel.devices import set_cpu_devices

T = TypeVar("T")
_SYNC_CALLS = itertools.count(1)  # the preemption service's call count: never reset, whatever runs this process makes
_BARRIERS = itertools.count()  # a coordination-service barrier's name may be used once
# Gloo gives the processes 30 s to meet at their first collective over a set of devices (it then makes that set's
# context, once per process); the coordination service's barrier waits as long as we ask. Process 0 may spend minutes
# alone (a data cache, a checkpoint's move), and one process's compile may take half a minute longer than another's.
BARRIER_TIMEOUT_S = 3600


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    coordinator: str = ""  # HOST:PORT of process 0, "auto", or "" for a single process
    num_processes: int = 1
    process_id: int = 0
    cpu_devices: int = 0  # simulated CPU devices per process (tests, CPU-only clusters); 0 = JAX's default

    @classmethod
    def from_env(cls, environ=os.environ) -> "DistributedConfig":
        try:
            return cls(
                environ.get("MESHLM_COORDINATOR", ""),
                int(environ.get("MESHLM_NUM_PROCESSES", 1)),
                int(environ.get("MESHLM_PROCESS_ID", 0)),
                int(environ.get("MESHLM_CPU_DEVICES", 0)),
            )
        except ValueError as e:
            raise ConfigError(f"a MESHLM_* distributed variable is not an integer ({e}); fix the environment") from None

    def with_flags(
        self, coordinator=None, num_processes=None, process_id=None, cpu_devices=None
    ) -> "DistributedConfig":
        """Command-line flags (None = not given) over the environment."""
        flags = dict(
            coordinator=coordinator, num_processes=num_processes, process_id=process_id, cpu_devices=cpu_devices
        )
        return dataclasses.replace(self, **{k: v for k, v in flags.items() if v is not None})


def initialize(cfg: DistributedConfig) -> None:
    """Join the other processes; must run before anything touches a JAX device."""
    if cfg.cpu_devices:
        set_cpu_devices(cfg.cpu_devices, "--cpu-devices")
    if not cfg.coordinator:
        if cfg.num_processes != 1:
            raise ConfigError(
                f"--num-processes={cfg.num_processes} needs --coordinator HOST:PORT (process 0's address) or auto"
            )
        return
    if cfg.coordinator != "auto" and not 0 <= cfg.process_id < cfg.num_processes:
        raise ConfigError(
            f"--process-id={cfg.process_id} must be in [0, {cfg.num_processes}) for --num-processes={cfg.num_processes}"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process collectives between CPU devices
    if cfg.coordinator == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(cfg.coordinator, cfg.num_processes, cfg.process_id)
    barrier("start")
    # Gloo's contexts made while in step: one per local device across the processes (what process_allgather uses),
    # and the one over every device (a data-parallel gradient's sum).
    multihost_utils.sync_global_devices("meshlm:start")
    every_device = NamedSharding(Mesh(np.array(jax.devices()), ("all",)), P("all"))
    ones = jax.make_array_from_process_local_data(every_device, np.ones(jax.local_device_count(), np.int32))
    jax.jit(jnp.sum, out_shardings=NamedSharding(every_device.mesh, P()))(ones).block_until_ready()


def compiled_in_step(jitted: Callable) -> Callable:
    """`jitted` (a jax.jit function without static arguments) compiled ahead for each new input signature, and run
    only once every process has compiled it: the collectives it is first to use then make their contexts in step."""
    if jax.process_count() == 1:
        return jitted
    executables = {}

    @functools.wraps(jitted)
    def call(*args):
        leaves, tree = jax.tree.flatten(args)
        key = (tree, tuple((np.shape(x), jnp.result_type(x), getattr(x, "sharding", None)) for x in leaves))
        if key not in executables:
            executables[key] = jitted.lower(*args).compile()
            barrier("compiled")
        return executables[key](*args)

    return call


def barrier(name: str) -> None:
    """Wait until every process got here, on the coordination service: no device collective, no 30 s limit."""
    if jax.process_count() > 1:
        orbax_multihost.get_barrier_sync_fn()(
            key=f"meshlm:{name}:{next(_BARRIERS)}", timeout_ms=BARRIER_TIMEOUT_S * 1000
        )


def gather_json(obj) -> list:
    """Every process's `obj` (any JSON value), in process order, on every process. A collective: all must call."""
    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.array([len(data)], np.int32)).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: len(data)] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, lengths)]


def first_process_first(fn: Callable[[], T]) -> T:
    """fn() on process 0, then on the others: what process 0 writes (a tokenizer, a data cache), they read."""
    if jax.process_index() == 0:
        result = fn()
    if jax.process_count() > 1:
        barrier("first_process_first")
    if jax.process_index() != 0:
        result = fn()
    return result


def preemption_service() -> bool:
    """Whether JAX's preemption service runs in this process (jax.distributed started it): it then owns SIGTERM."""
    return jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service


def reached_preemption_sync_point() -> bool:
    """Whether every process stops after this train call, once the service heard of a SIGTERM on any of them. Every
    process calls it once per train call, so the nth call is the same step everywhere: the service agrees on the
    fastest process's count + 1."""
    return multihost_utils.reached_preemption_sync_point(next(_SYNC_CALLS))
