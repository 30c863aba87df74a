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
    CheckpointError,
    ClusterError,
    ConfigError,
    DataError,
    ModelError,
    PsdistError,
    ServerError,
)
from psdist.history import History
from psdist.stopping import EarlyStopping
from psdist.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
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
    "metrics",
    "optim",
    "rules",
    "write_zarr",
]
