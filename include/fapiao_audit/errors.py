"""Errors that stop a night with exit 2 and one clear message (never a traceback)."""


class FapiaoError(Exception):
    """Base: the run could not be carried out; nothing is published."""


class ConfigError(FapiaoError):
    """The configuration or the command line is wrong; the message names the key."""


class InputError(FapiaoError):
    """A delivery cannot be read or is incomplete; the message names the file and the problem."""


class LockError(FapiaoError):
    """Another run holds the DuckDB file."""


class PublishError(FapiaoError):
    """The night could not be written to the reports folder; the previous version is intact."""
