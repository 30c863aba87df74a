"""The psdist exception hierarchy.

Every error psdist raises on purpose derives from :class:`PsdistError` *and* from the builtin
that fits it, so ``except ValueError`` in user code keeps working. Messages name the bad value
and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "DataError",
    "ModelError",
    "PsdistError",
    "ServerError",
]


class PsdistError(Exception):
    """Base class of every error raised by psdist."""


class ConfigError(PsdistError, ValueError):
    """A setting is out of range or inconsistent (learning rate, staleness bound, batch size...)."""


class DataError(PsdistError, ValueError):
    """The training data is missing, malformed or inconsistent (paths, array lengths, chunks)."""


class ModelError(PsdistError, TypeError):
    """The model factory, the model or the loss does not fit psdist or the data."""


class CheckpointError(PsdistError, ValueError):
    """A checkpoint is truncated, corrupted, or belongs to another model architecture."""


class ServerError(PsdistError, RuntimeError):
    """The parameter server refused a request or cannot be reached."""


class ClusterError(PsdistError, RuntimeError):
    """The Dask cluster cannot run the training as asked."""
