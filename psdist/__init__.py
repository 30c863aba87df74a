"""psdist: asynchronous data-parallel PyTorch training through a Dask-actor parameter server.

>>> import psdist
>>> trainer = psdist.Trainer(make_model, torch.nn.functional.cross_entropy,
...                          data=psdist.ZarrDataset("jets.zarr"),
...                          optimizer=psdist.optim.SGD(lr=0.05, momentum=0.9))
>>> history = trainer.fit(epochs=5)            # doctest: +SKIP

The names below load on first use (PEP 562): ``import psdist.core.server`` pulls in neither
torch nor distributed, and ``import psdist`` alone stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from psdist.errors import (
    BadChunkError,
    CheckpointError,
    ClusterError,
    ConfigError,
    DataError,
    DeviceError,
    ModelError,
    PsdistError,
    ServerError,
)

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from psdist import metrics, optim, rules
    from psdist.data import ZarrDataset, write_zarr
    from psdist.run.history import History
    from psdist.run.recovery import Checkpoints
    from psdist.run.stopping import EarlyStopping
    from psdist.trainer import Trainer

__version__ = "0.1.0"

#: public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "Trainer": ("psdist.trainer", "Trainer"),
    "ZarrDataset": ("psdist.data.dataset", "ZarrDataset"),
    "write_zarr": ("psdist.data.write", "write_zarr"),
    "History": ("psdist.run.history", "History"),
    "Checkpoints": ("psdist.run.recovery", "Checkpoints"),
    "EarlyStopping": ("psdist.run.stopping", "EarlyStopping"),
    "metrics": ("psdist.metrics", None),
    "optim": ("psdist.optim", None),
    "rules": ("psdist.rules", None),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'psdist' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def batch_cluster(config: str, jobs: int = 1, **kwargs: Any) -> tuple[object, object]:
    """A dask-jobqueue cluster from a ``jobqueue/*.yaml`` config (:func:`psdist.cluster.batch.batch_cluster`)."""
    from psdist.cluster.batch import batch_cluster as _batch_cluster

    return _batch_cluster(config, jobs=jobs, **kwargs)


__all__ = [
    "BadChunkError",
    "CheckpointError",
    "Checkpoints",
    "ClusterError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "EarlyStopping",
    "History",
    "ModelError",
    "PsdistError",
    "ServerError",
    "Trainer",
    "ZarrDataset",
    "__version__",
    "batch_cluster",
    "metrics",
    "optim",
    "rules",
    "write_zarr",
]
