"""The error the data pipeline raises for anything a user can fix."""

from meshlm.model.errors import ConfigError


class DataError(ConfigError):
    """Data that cannot be fetched, found or read; the message names the fix on one line."""


class NonFiniteError(ConfigError):
    """A non-finite loss or gradient under train.nonfinite=stop: the step, the parameters and the checkpoint."""
