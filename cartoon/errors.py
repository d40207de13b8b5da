"""Two kinds of failure, so the CLI can map them to exit codes (2 = usage, 1 = runtime)."""


class UsageError(Exception):
    """The user asked for something invalid: a bad params key, a missing input path, a bad option."""


class RuntimeFailure(Exception):
    """The request was valid but the work failed: NaN loss, unreadable checkpoint, no usable images."""
