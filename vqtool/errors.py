"""The one error family of vqtool.

Every user-facing failure raises a :class:`VqtoolError` subclass whose message
names the file or tensor and says what to do. The CLI prints that message as one
line and exits non-zero; ``--debug`` (or ``VQTOOL_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import os


class VqtoolError(Exception):
    """Base of every error vqtool reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, tensor: str | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.tensor = tensor
        self.message = message
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.tensor:
            where.append(f"tensor '{self.tensor}'")
        return f"{': '.join(where)}: {self.message}" if where else self.message


class InputError(VqtoolError):
    """An input path is missing, unreadable or of a kind vqtool does not know."""


class UnsupportedFormatError(InputError):
    """The file or folder is not in a format vqtool reads."""


class CorruptFileError(InputError):
    """A file is in a known format but its bytes are damaged: wrong magic, bad header."""


class TruncatedFileError(CorruptFileError):
    """A file is shorter than its own header says."""


class HeaderMismatchError(CorruptFileError):
    """A header contradicts itself (offsets vs. shapes and dtypes)."""


class MissingShardError(InputError):
    """A shard index names a file that is not there."""


class UnsafePickleError(InputError):
    """A torch pickle wants to run code; vqtool only loads weights (``weights_only=True``)."""


class TensorNotFoundError(InputError):
    """A tensor name is not in the source."""


class NonFiniteError(VqtoolError):
    """A tensor holds NaN or Inf where a finite value is required."""


class ShapeError(VqtoolError):
    """A tensor's shape does not fit the operation (e.g. row length vs. block size)."""


class MappingError(VqtoolError):
    """Tensor names could not be mapped between formats (unknown or missing keys)."""


class DetectionError(VqtoolError):
    """The model family, variant or component could not be determined."""


class PolicyError(VqtoolError):
    """A quantization policy or override is invalid."""


class OutputExistsError(VqtoolError):
    """The output exists and ``--overwrite`` was not given."""


class QualityRegression(VqtoolError):
    """A quality check failed (used by ``vqtool check``)."""
