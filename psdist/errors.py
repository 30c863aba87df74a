"""The psdist exception hierarchy.

Every error psdist raises on purpose derives from :class:`PsdistError` *and* from the builtin
that fits it, so ``except ValueError`` in user code keeps working. Messages name the bad value
and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "BadChunkError",
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "InvalidServerState",
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


class DeviceError(ClusterError):
    """A worker cannot train on the device it was given (a GPU worker where torch sees no GPU)."""


class BadChunkError(DataError):
    """A chunk of the Zarr store cannot be read: its file is missing, truncated or corrupted.

    Parameters
    ----------
    message
        The full explanation (store, array, chunk, cause, fix).
    path
        The store's path.
    array
        Name of the array holding the bad chunk (``"x"``, ``"y"``, ...).
    chunk
        Index of the psdist chunk (the task) whose rows could not be read.
    rows
        ``(start, stop)`` rows of that task.
    store_chunk
        Coordinates of the bad Zarr chunk in the array's chunk grid, when known.
    """

    def __init__(
        self,
        message: str,
        path: str = "",
        array: str = "",
        chunk: int = -1,
        rows: tuple[int, int] = (0, 0),
        store_chunk: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.array = array
        self.chunk = chunk
        self.rows = tuple(rows)
        self.store_chunk = None if store_chunk is None else tuple(store_chunk)

    def __reduce__(self) -> tuple[type[BadChunkError], tuple[object, ...]]:
        # exceptions pickle as cls(*args) by default, which would drop the fields (Dask pickles
        # a task's exception to send it to the client)
        return type(self), (str(self), self.path, self.array, self.chunk, self.rows, self.store_chunk)


class InvalidServerState(AssertionError):
    """:meth:`ServerState.validate_state` found a broken invariant (a bug in psdist or a rule).

    An ``AssertionError``, not a :class:`PsdistError`: it never describes bad input, only a bug.
    """
