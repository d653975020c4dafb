"""One exception hierarchy for everything msd-triplet reports to a user.

Every error raised on purpose by this package is an :class:`MsdTripletError`.
The command line turns it into a single ``error: ...`` line and a non-zero
exit code; library users can catch the base class or one of its children.
Messages name the file or value, say what was wrong and what is allowed.
"""

from __future__ import annotations


class MsdTripletError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MsdTripletError):
    """A configuration file or value is missing, unknown or of the wrong type."""


class DataError(MsdTripletError):
    """A tag-set, metadata, split or prepared-data file cannot be used."""


class ArgumentError(MsdTripletError, ValueError):
    """A function argument has a value that is not allowed.

    Also a ``ValueError``, so code that catches ``ValueError`` for bad
    arguments keeps working, and the command line reports it as one line.
    """


class AudioError(MsdTripletError):
    """An audio file cannot be decoded or does not hold the requested segment.

    ``kind`` is a short machine-readable category for manifests and counts:
    ``missing``, ``not_a_file`` (a directory, device, FIFO or socket),
    ``empty``, ``undecodable``, ``too_short``, ``truncated``, ``not_finite``.
    """

    def __init__(self, message: str, kind: str = "undecodable") -> None:
        super().__init__(message)
        self.kind = kind
