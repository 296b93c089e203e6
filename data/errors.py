"""Errors raised for measurements that cannot be used.

Every reader and validator raises one of these, so that a pipeline can fail at once (no retry)
with a message a scientist can act on: which file, which variable, and what was expected.
The subclasses let callers (and tests) tell the failure kinds apart without parsing messages.
"""

from __future__ import annotations

from pathlib import Path


class InvalidMeasurement(ValueError):
    """A measurement that cannot be read or does not satisfy the schema.

    ``path`` is the file (or ``None`` for an in-memory dataset), ``variable`` the variable or
    attribute at fault, ``expected`` what would have been acceptable and ``got`` what was found.
    """

    def __init__(self, path, variable: str, expected: str, got: str | None = None):
        self.path = None if path is None else str(path)
        self.variable = variable
        self.expected = expected
        self.got = got
        where = self.path if self.path is not None else "<in-memory dataset>"
        message = f"{where}: variable {variable!r}: expected {expected}"
        if got is not None:
            message += f", got {got}"
        super().__init__(message)

    def __reduce__(self):
        # Exceptions cross process boundaries (Dask workers, Prefect results); the default
        # reduction would call __init__ with the message only and fail.
        return (type(self), (self.path, self.variable, self.expected, self.got))

    @property
    def file_name(self) -> str | None:
        return None if self.path is None else Path(self.path).name

    def naming(self, path) -> "InvalidMeasurement":
        """The same error naming ``path``, for a check that ran on data already read from it."""
        if self.path is not None or path is None:
            return self
        return type(self)(path, self.variable, self.expected, self.got)


class MissingFile(InvalidMeasurement, FileNotFoundError):
    """The file or directory does not exist (also a FileNotFoundError for generic handlers)."""


class CorruptFile(InvalidMeasurement):
    """The file exists but cannot be decoded (truncated, damaged, not what its header claims)."""


class NonFiniteValues(InvalidMeasurement):
    """NaN or infinite values where finite numbers are required."""


class ShapeMismatch(InvalidMeasurement):
    """Array shapes or lengths that disagree (e.g. angle count versus sinogram views)."""


class MissingGeometry(InvalidMeasurement):
    """Geometry needed to interpret the data is absent (e.g. fan beam without distances)."""


class UnknownFormat(InvalidMeasurement):
    """The file's content matches none of the supported formats."""


class DuplicateCoordinates(InvalidMeasurement):
    """Two or more field observations at the same (x, y) (and time): ambiguous for a gridder."""


class InvalidGrid(InvalidMeasurement):
    """A target grid that cannot hold a field: zero cells, non-positive spacing, empty extent."""


class OutsideGrid(InvalidMeasurement):
    """Observations that fall outside the target grid they are to be reconstructed on."""
