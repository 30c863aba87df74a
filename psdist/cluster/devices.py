"""What each worker process has (:func:`probe`), for :func:`psdist.core.devices.assign_devices`."""

from __future__ import annotations

import os
import socket
from typing import Any

from psdist.core.devices import WorkerDevices

__all__ = ["local_facts", "probe"]


def local_facts(address: str, name: str, gpu_resource: float) -> WorkerDevices:
    """This process's :class:`WorkerDevices` (runs on a worker; CUDA is not initialised when
    torch sees no device)."""
    import torch

    gpus: tuple[str, ...] = ()
    if torch.cuda.is_available():
        ids = []
        for i in range(torch.cuda.device_count()):
            uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
            ids.append(str(uuid) if uuid is not None else f"{socket.gethostname()}:{i}")
        gpus = tuple(ids)
    return WorkerDevices(address, name, socket.gethostname(), gpu_resource, gpus,
                         os.environ.get("CUDA_VISIBLE_DEVICES"), torch.version.cuda)


def _probe_worker(dask_worker: Any) -> WorkerDevices:
    return local_facts(dask_worker.address, str(dask_worker.name),
                       float(dask_worker.state.total_resources.get("GPU", 0)))


def probe(client: Any) -> list[WorkerDevices]:
    """What every worker of ``client``'s cluster has (one ``client.run``; torch imported there)."""
    return list(client.run(_probe_worker).values())
