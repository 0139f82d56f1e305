"""The errors training raises, and the exit code of a run stopped by a preemption."""

from meshlm.model.errors import ConfigError


class DataError(ConfigError):
    """Data that cannot be fetched, found or read; the message names the fix on one line."""


class NonFiniteError(ConfigError):
    """A non-finite loss or gradient under train.nonfinite=stop: the step, the parameters and the checkpoint."""


# `meshlm train` exits with this code when a SIGTERM or SIGINT stopped the run and its step was checkpointed: retry
# the same command to resume. 42 because xpk restarts a workload on 42 (and 127-255) without being told to.
PREEMPTED_EXIT_CODE = 42


class Preempted(Exception):
    """A run stopped by a signal after saving the step every process stopped at; running it again resumes there."""
