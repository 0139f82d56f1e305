"""Stopping for a preemption without losing a step: on SIGTERM or SIGINT every process stops after the same train
call, that step is checkpointed (train state and data-iterator state), and `Trainer.run` raises `Preempted`, which
`meshlm train` turns into exit code PREEMPTED_EXIT_CODE. The same command then resumes from that checkpoint.

One process catches both signals itself. Several processes stop through JAX's preemption service, which
`jax.distributed.initialize` starts: its C handler owns SIGTERM, tells every process of it through the coordination
service, and they agree on a call count to stop at (the fastest process's + 1) that each of them has yet to reach.
SIGINT is handed to that handler as a SIGTERM, so both signals take the one path.

A second signal changes nothing: the stop (and its save) goes on, since a launcher that forwards SIGTERM to the
process group may well deliver it twice. SIGKILL stops at once and loses only the steps after the last complete
checkpoint (tests/training/test_kill_anywhere.py)."""

import os
import signal
import threading

from meshlm.parallel import distributed
from meshlm.training.errors import PREEMPTED_EXIT_CODE, Preempted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Catches SIGTERM and SIGINT while active (a context manager); `agreed(step)`, asked after every train call
    but the last, says whether every process stops after that step."""

    def __init__(self):
        self.received: str | None = None  # the first signal this process caught itself
        self.stopped_at: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return self
        for sig in SIGNALS:
            if sig == signal.SIGTERM and distributed.preemption_service():
                continue  # JAX's handler, which every process listens to
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            _say(f"meshlm: {name} again: the stop and its checkpoint go on (kill -9 stops at once)\n")
            return
        self.received = name
        _say(f"meshlm: {name}: stopping at a step every process reaches, once that step is saved\n")
        if distributed.preemption_service():
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's handler: every process then agrees on the step

    def agreed(self, step: int) -> bool:
        """Whether to save `step` and stop; every process gets the same answer after the same call."""
        if distributed.preemption_service():
            stop = distributed.reached_preemption_sync_point()
        else:
            stop = self.received is not None
        if stop:
            self.stopped_at = step
        return stop

    def preempted(self, checkpoints) -> Preempted:
        cause = self.received or "a preemption notice (SIGTERM to one of the processes)"
        return Preempted(
            f"{cause}: stopped after step {self.stopped_at}, saved in {checkpoints}; run the same command again to "
            f"resume there (exit code {PREEMPTED_EXIT_CODE})"
        )


def _say(message: str) -> None:
    # os.write, not print: a handler that prints while the interrupted code is printing raises a reentrancy error.
    os.write(2, message.encode())
