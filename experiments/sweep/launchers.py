"""Where runs execute: one at a time in a worker process on this machine (local), or one Ray task per run on its
own worker (ray), or, for a run spanning several hosts, one per host of a slice (ray_hosts.py).

Both hand each finished run's RunResult, or its Failure, back to the driver, which alone writes the store and
decides on retries. Ray does the fan-out and the placement; the driver only keeps `slots` runs in flight.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from typing import Protocol

from meshlm.experiments.sweep import ray_hosts, worker
from meshlm.experiments.sweep.execute import LOG, execute
from meshlm.experiments.sweep.failures import Failure, classify, from_exit
from meshlm.experiments.sweep.store import RunResult
from meshlm.model.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Job:
    run_id: str
    config: dict
    run_dir: str
    tokenizer: str
    compile_cache: str = ""  # a JAX persistent compilation cache directory, "" = none
    attempt: int = 1  # which try of this run, counted across drivers
    branch_from: str = ""  # a cooldown branch: its trunk's run directory (execute.py)
    branch_step: int = 0  # ... and the trunk step it starts from


Outcome = RunResult | Failure
STOP_TIMEOUT_S = 30.0  # a run told to stop has this long to checkpoint (a GCE spot VM's notice)


class Launcher(Protocol):
    slots: int  # runs the driver keeps in flight

    def submit(self, job: Job) -> None: ...

    # The next finished job, or None when none finished within `timeout` seconds (None: wait as long as it takes).
    def wait(self, timeout: float | None = None) -> tuple[Job, Outcome] | None: ...

    def close(self) -> None: ...


class LocalLauncher:
    """One run at a time, in a worker process (worker.py) whose output goes to the run's sweep.log."""

    slots = 1

    def __init__(self):
        self._running: tuple[Job, subprocess.Popen] | None = None

    def environment(self, job: Job) -> dict[str, str]:
        """The worker's environment variables: this process's (a test adds a fault to chosen attempts)."""
        return dict(os.environ)

    def submit(self, job: Job) -> None:
        run_dir = pathlib.Path(job.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / worker.OUTCOME).unlink(missing_ok=True)  # a killed attempt must not report the last one's
        with (run_dir / LOG).open("a") as log:
            log.write(f"attempt {job.attempt}\n")
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "meshlm.experiments.sweep.worker"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(job),
            )
        proc.stdin.write(json.dumps({"job": dataclasses.asdict(job), "parent": os.getpid()}).encode())
        proc.stdin.close()
        self._running = (job, proc)

    def wait(self, timeout: float | None = None) -> tuple[Job, Outcome] | None:
        job, proc = self._running
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._running = None
        outcome = worker.read_outcome(job.run_dir)
        if status == 0 and isinstance(outcome, RunResult):
            return job, outcome
        return job, from_exit(status, outcome if isinstance(outcome, str) else "")

    def close(self) -> None:
        """Stop a run still in flight as a preemption would (the trainer saves the step it stops at), or kill it."""
        if self._running:
            proc = self._running[1]
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._running = None


class RayLauncher:
    """Each run a Ray task in a fresh worker process (max_calls=1: no JAX state carries over between runs); a run of
    hosts_per_run > 1 a task per host of one slice, joined by jax.distributed (ray_hosts.py)."""

    def __init__(
        self,
        address: str = "",
        cpus_per_run: float = 1.0,
        gpus_per_run: float = 0.0,
        hosts_per_run: int = 1,
        slice_head: str = "",
        tpus_per_host: float = 0.0,
        cpu_devices: int = 0,
    ):
        try:
            import ray  # deferred: an optional extra (pip install 'meshlm[ray]'), heavy to import
        except ImportError:
            raise ConfigError("--launcher ray needs Ray; pip install 'meshlm[ray]' or use --launcher local") from None
        if hosts_per_run > 1 and not slice_head:
            raise ConfigError(
                f"--hosts-per-run={hosts_per_run} needs --slice-head, the resource a slice's first host holds "
                "(e.g. TPU-v4-16-head)"
            )
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
        # Workers import meshlm from the driver's environment; MESHLM_*, XLA_FLAGS and WANDB_* travel with the task.
        self._env = {
            k: v for k, v in os.environ.items() if k.startswith(("MESHLM_", "XLA_", "JAX_", "TFDS_", "WANDB_"))
        }
        resources = ray.cluster_resources()
        self._in_flight: dict = {}
        self._hosts = None
        # max_retries=0 (here and for host tasks): the driver retries a crashed run itself, counting it in the store.
        if hosts_per_run > 1:
            self._hosts = ray_hosts.Hosts(hosts_per_run, cpus_per_run, gpus_per_run, tpus_per_host, cpu_devices)
            if cpu_devices:  # XLA's own device count would override it
                flags = self._env.get("XLA_FLAGS", "").split()
                self._env["XLA_FLAGS"] = " ".join(f for f in flags if "force_host_platform_device_count" not in f)
            # The orchestrator holds the slice's head for the run's duration: one run per slice.
            self._remote = ray.remote(
                num_cpus=0, resources={slice_head: 1}, max_retries=0, runtime_env={"env_vars": self._env}
            )(ray_hosts.run_on_slice)
            self.slots = max(1, int(resources.get(slice_head, 0)))
        else:
            self._remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_calls=1, max_retries=0)(execute)
            fits = [resources.get("CPU", 0) / cpus_per_run] if cpus_per_run else []
            fits += [resources.get("GPU", 0) / gpus_per_run] if gpus_per_run else []
            self.slots = max(1, int(min(fits, default=1)))

    def environment(self, job: Job, process_id: int) -> dict[str, str]:
        """The environment variables of a run's task, or of one host's (a test adds a fault to chosen tries and
        processes)."""
        return dict(self._env)

    def submit(self, job: Job) -> None:
        if self._hosts:
            envs = [self.environment(job, i) for i in range(self._hosts.count)]
            ref = self._remote.remote(dataclasses.asdict(job), self._hosts, envs)
        else:
            remote = self._remote.options(runtime_env={"env_vars": self.environment(job, 0)})
            ref = remote.remote(
                job.config, job.run_dir, job.tokenizer, job.compile_cache, job.branch_from, job.branch_step
            )
        self._in_flight[ref] = job

    def wait(self, timeout: float | None = None) -> tuple[Job, Outcome] | None:
        ready, _ = self._ray.wait(list(self._in_flight), num_returns=1, timeout=timeout)
        if not ready:
            return None
        job = self._in_flight.pop(ready[0])
        try:
            return job, self._ray.get(ready[0])
        except Exception as e:  # a RayTaskError wraps the run's own exception as its cause; a dead worker has none
            return job, classify(getattr(e, "cause", None) or e)

    def close(self) -> None:
        for ref in self._in_flight:
            self._ray.cancel(ref, force=True)
        self._in_flight.clear()
        if self._owns:
            self._ray.shutdown()


def make(kind: str, **ray_settings) -> Launcher:
    """`ray_settings`: RayLauncher's keyword arguments (address, cpus_per_run, hosts_per_run, ...)."""
    if kind == "local":
        return LocalLauncher()
    if kind == "ray":
        return RayLauncher(**ray_settings)
    raise ConfigError(f"unknown launcher {kind!r}; use local or ray")
