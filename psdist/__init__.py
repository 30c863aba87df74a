"""psdist: asynchronous data-parallel PyTorch training through a Dask-actor parameter server.

>>> import psdist
>>> trainer = psdist.Trainer(make_model, torch.nn.functional.cross_entropy,
...                          data=psdist.ZarrDataset("jets.zarr"),
...                          optimizer=psdist.optim.SGD(lr=0.05, momentum=0.9))
>>> history = trainer.fit(epochs=5)            # doctest: +SKIP
"""

from __future__ import annotations

from psdist import metrics, optim, rules
from psdist.data import ZarrDataset, write_zarr
from psdist.errors import (
    BadChunkError,
    CheckpointError,
    ClusterError,
    ConfigError,
    DataError,
    ModelError,
    PsdistError,
    ServerError,
)
from psdist.history import History
from psdist.recovery import Checkpoints
from psdist.stopping import EarlyStopping
from psdist.trainer import Trainer

__version__ = "0.1.0"


def batch_cluster(config: str, jobs: int = 1, **kwargs: object) -> tuple[object, object]:
    """A dask-jobqueue cluster from a ``jobqueue/*.yaml`` config (:func:`psdist.batch.batch_cluster`)."""
    from psdist.batch import batch_cluster as _batch_cluster

    return _batch_cluster(config, jobs=jobs, **kwargs)

__all__ = [
    "BadChunkError",
    "CheckpointError",
    "Checkpoints",
    "ClusterError",
    "ConfigError",
    "DataError",
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
