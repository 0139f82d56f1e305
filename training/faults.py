"""Test-only fault injection: the trainer passes named points, and a test picks where the process fails, so it
chooses the moment instead of hoping to hit it.

MESHLM_KILL_AT=POINT:STEP: the process sends itself SIGKILL there (the kill-anywhere test).
MESHLM_KILL_SWEEP_AT=POINT:STEP: a sweep's worker sends SIGKILL there to its parent, the sweep's driver, then to
itself: the whole sweep dies at that moment, as on a lost machine.
MESHLM_SIGNAL_AT=POINT:STEP[:INT],...: it sends itself SIGTERM (SIGINT with :INT) at each, once (the preemption tests).

Points: `setup` (config and tokenizer written, before the first step; STEP is the step resumed from), `compile`
(inside JAX's compilation of the call that trains up to step STEP: a run's first call compiles), `step` (step
STEP dispatched, nothing logged), `metrics` (step STEP logged), `eval` (the validation of step STEP begun),
`checkpoint` (the asynchronous save of step STEP started and still being written)."""

import os
import signal
import time

import jax

ENV, SIGNAL_ENV = "MESHLM_KILL_AT", "MESHLM_SIGNAL_AT"
SWEEP_ENV = "MESHLM_KILL_SWEEP_AT"
_SPEC = os.environ.get(ENV, "")
_SWEEP_SPEC = os.environ.get(SWEEP_ENV, "")
_SIGNALS = {
    ":".join(entry.split(":")[:2]): signal.SIGINT if entry.endswith(":INT") else signal.SIGTERM
    for entry in os.environ.get(SIGNAL_ENV, "").split(",")
    if entry
}
_COMPILING: list[signal.Signals] = []  # armed at a `compile` point, sent at JAX's next compilation event


def kill_point(point: str, step: int) -> None:
    if _SPEC and _SPEC == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
    if _SWEEP_SPEC and _SWEEP_SPEC == f"{point}:{step}":
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    sig = _SIGNALS.pop(f"{point}:{step}", None)
    if sig is not None and point == "compile":
        _COMPILING.append(sig)
        jax.monitoring.register_event_duration_secs_listener(_on_compile_event)
    elif sig is not None:
        _send(sig)


def _on_compile_event(event: str, duration: float, **kwargs) -> None:
    if _COMPILING and event.startswith("/jax/core/compile/"):
        _send(_COMPILING.pop())


def _send(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    if jax.distributed.is_initialized():
        # JAX's preemption notifier polls for SIGTERM once a second: wait until every process has agreed where to
        # stop, or a test run of a few steps may end first.
        time.sleep(3.0)
