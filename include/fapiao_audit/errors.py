"""Errors that stop a night with exit 2 and one clear message (never a traceback)."""


class FapiaoError(Exception):
    """Base: the run could not be carried out; nothing is published."""


class ConfigError(FapiaoError):
    """The configuration or the command line is wrong; the message names the key."""


class SuiteError(ConfigError):
    """An expectation suite, a threshold or a source name handed to the validation is unusable."""


class InputError(FapiaoError):
    """A delivery cannot be read or is incomplete; the message names the file and the problem."""


class LockError(FapiaoError):
    """Another run holds the DuckDB file."""


class PublishError(FapiaoError):
    """The night could not be written to the reports folder; the previous version is intact."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (cut to ``limit``), or its type's name."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__
