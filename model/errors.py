"""The one exception type users see: the CLI prints its message on one line, without a traceback."""


class ConfigError(ValueError):
    """An invalid configuration or input; the message names the problem and the fix."""
