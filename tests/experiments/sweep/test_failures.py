"""Failure classification: config, data, non-finite and out-of-memory errors are deterministic, anything else (a
kill, a crash, a preemption's exit status) is worth a retry."""

import jax
import pytest

from meshlm.experiments.sweep.failures import DETERMINISTIC_EXIT, Failure, classify, from_exit
from meshlm.model.errors import ConfigError
from meshlm.training.errors import DataError, NonFiniteError


@pytest.mark.parametrize(
    "error",
    [ConfigError("mesh 'data=3' needs 3 devices"), DataError("no files match"), NonFiniteError("loss is nan")],
    ids=["config", "data", "nonfinite"],
)
def test_config_data_and_nonfinite_errors_are_not_retried(error):
    assert classify(error) == Failure(f"{type(error).__name__}: {error}", retryable=False)


def test_running_out_of_device_memory_is_not_retried_and_says_so():
    error = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1.00GiB.\nBuffer assignment: ...")
    failure = classify(error)
    assert failure == Failure(
        "out of memory: JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating 1.00GiB.", False
    )


@pytest.mark.parametrize(
    "error", [RuntimeError("the run stopped before step 20"), jax.errors.JaxRuntimeError("INTERNAL: stream died")]
)
def test_other_errors_are_retried(error):
    assert classify(error).retryable


def test_exit_statuses():
    assert from_exit(-9) == Failure("killed by signal 9 (Killed)", retryable=True)
    assert from_exit(DETERMINISTIC_EXIT, "ConfigError: bad") == Failure("ConfigError: bad", retryable=False)
    assert from_exit(DETERMINISTIC_EXIT) == Failure(f"exit status {DETERMINISTIC_EXIT}", retryable=False)
    assert from_exit(1, "RuntimeError: crashed") == Failure("RuntimeError: crashed", retryable=True)
    assert from_exit(42) == Failure("exit status 42", retryable=True)  # the exit status of a preempted job
