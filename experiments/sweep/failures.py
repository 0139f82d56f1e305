"""Why a sweep run failed, and whether trying it again can help.

A config error (data errors and a non-finite loss under train.nonfinite=stop are config errors too) or XLA running
out of device memory fails the same way every time: such a run is recorded failed at once. Anything else, a run
killed, preempted or crashed, is retried from its checkpoint.
"""

import dataclasses
import signal

from meshlm.model.errors import ConfigError

# A worker process (worker.py) exits with this status when its run failed for a reason a retry cannot change; 0 is
# a finished run and anything else (a signal, a crash, a preemption's exit code) a run worth retrying.
DETERMINISTIC_EXIT = 3
_OUT_OF_MEMORY = "RESOURCE_EXHAUSTED"  # the status XLA's runtime errors start with when an allocation fails


@dataclasses.dataclass(frozen=True)
class Failure:
    reason: str  # one line
    retryable: bool


def classify(error: BaseException) -> Failure:
    """The one place a run's error is judged deterministic or worth retrying."""
    message = str(error).strip()
    reason = f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"[:500]
    if isinstance(error, ConfigError):
        return Failure(reason, retryable=False)
    if _OUT_OF_MEMORY in message:
        return Failure(f"out of memory: {reason}", retryable=False)
    return Failure(reason, retryable=True)


def from_exit(status: int, reason: str = "") -> Failure:
    """A worker's exit status, with the reason it wrote (none when it was killed before it could)."""
    default = f"killed by signal {-status} ({signal.strsignal(-status)})" if status < 0 else f"exit status {status}"
    return Failure(reason or default, retryable=status != DETERMINISTIC_EXIT)
