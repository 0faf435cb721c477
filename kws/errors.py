"""Errors a user can act on: the CLI prints them as one line, the server as 4xx JSON."""


class KwsError(Exception):
    """Base class for expected, user-facing errors."""


class AudioError(KwsError):
    """The input cannot be decoded as usable audio."""


class DataError(KwsError):
    """A dataset source is missing, malformed or fails verification."""


class ParamsError(KwsError):
    """params.yaml is missing, malformed or has unknown keys."""


class ModelPackageError(KwsError):
    """A model package directory is missing or incomplete."""
