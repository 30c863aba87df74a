"""Which device each worker trains on: the embedded cluster's plan, and any cluster's check.

Two questions, answered by pure functions over plain facts (tested without a GPU or a network):

* **Embedded cluster** (:func:`embedded_devices`): which GPUs to start workers on. One worker
  process per GPU, pinned by ``CUDA_VISIBLE_DEVICES`` (as dask-cuda's ``LocalCUDACluster``
  does), plus one CPU worker for the parameter server, whose ``CUDA_VISIBLE_DEVICES`` is empty.
* **Any cluster** (:func:`assign_devices`): given what torch sees in each worker process
  (:class:`WorkerDevices`, gathered by :func:`psdist.cluster.devices.probe`), which device each training worker uses.
  A worker uses the GPU it was given (``cuda:0`` of its ``CUDA_VISIBLE_DEVICES``); workers of
  one host that see the same GPUs (not pinned) get distinct ones; a worker that advertises the
  ``GPU`` resource while torch sees none there is a :class:`~psdist.errors.DeviceError` naming
  it, raised before training starts.

Why not dask-cuda itself: its ``LocalCUDACluster`` makes every worker a GPU worker (psdist
wants a CPU worker for the server beside them) and it pins Dask to RAPIDS' release; it is a fine
cluster to hand to ``Trainer(client=...)``, whose workers this module then respects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psdist.errors import ConfigError, DeviceError

__all__ = [
    "CPU", "Devices", "WorkerDevices", "assign_devices", "describe", "embedded_devices", "parse_devices",
    "visible_gpus",
]

logger = logging.getLogger(__name__)

#: the device string of a worker that trains on its CPU
CPU = "cpu"

#: what ``devices=`` holds once checked: "auto", "cpu", a count of GPUs or GPU ordinals
Devices = str | int | tuple[int, ...]


def parse_devices(value: Any) -> Devices | None:
    """``devices=`` normalised: ``"auto"``, ``"cpu"``, a count ≥ 1 or a tuple of distinct GPU
    ordinals (a list, or text such as ``"0,2"`` from the command line); ``None`` if it is none."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "cpu"):
            return text
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if parts and all(p.isdigit() for p in parts):
            value = [int(p) for p in parts] if len(parts) > 1 or "," in text else int(parts[0])
        else:
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return tuple(value) if len(set(value)) == len(value) else None
    return None


def visible_gpus(count: int, env: str | None) -> tuple[str, ...]:
    """The ``CUDA_VISIBLE_DEVICES`` entries of this process's ``count`` GPUs, in torch's order.

    ``env`` is this process's ``CUDA_VISIBLE_DEVICES`` (``None``: unset, all GPUs by index). A
    worker pinned to ordinal ``i`` gets the ``i``-th entry, so a user's ``CUDA_VISIBLE_DEVICES=2,3``
    makes ``devices=[0]`` physical GPU 2, as torch's ``cuda:0`` is here.
    """
    if env is None:
        return tuple(str(i) for i in range(count))
    entries = tuple(e.strip() for e in env.split(",") if e.strip())
    return entries[:count]


def embedded_devices(devices: Devices, visible: Sequence[str], workers: int | None, why_none: str = "no GPU found"
                     ) -> tuple[tuple[str, ...], int]:
    """The embedded cluster's GPUs (``CUDA_VISIBLE_DEVICES`` entries; empty: CPU) and training workers.

    Parameters
    ----------
    devices
        The checked ``devices=`` setting (see :func:`parse_devices`).
    visible
        This process's GPUs (:func:`visible_gpus`); empty when torch sees none.
    workers
        The ``workers=`` setting: ``None`` means one per GPU, or 2 on CPU. With GPUs a number
        other than the GPUs' is an error (one worker process per GPU).
    why_none
        Why torch sees no GPU here (a CPU build, ``CUDA_VISIBLE_DEVICES`` empty), for the error.
    """
    if devices == CPU or (devices == "auto" and not visible):
        return (), 2 if workers is None else workers
    if devices == "auto":
        gpus = tuple(visible)
    elif isinstance(devices, int):
        if devices > len(visible):
            raise ConfigError(f"devices={devices} asks for {devices} GPUs, but torch sees {_seen(visible)}; "
                              f"use devices={len(visible) or 'cpu'!r}" if visible else
                              f"devices={devices} asks for GPUs, but torch sees none here ({why_none}); "
                              "use devices='cpu'")
        gpus = tuple(visible[:devices])
    else:
        assert isinstance(devices, tuple)
        bad = [d for d in devices if d >= len(visible)]
        if bad:
            raise ConfigError(f"devices={list(devices)}: no GPU {bad[0]} here; torch sees {_seen(visible)}"
                              + ("" if visible else f" ({why_none}); use devices='cpu'"))
        gpus = tuple(visible[d] for d in devices)
    if workers is not None and workers != len(gpus):
        raise ConfigError(f"workers={workers}, but devices={_code(devices)} trains on {len(gpus)} GPU(s), one "
                          f"worker process each; leave workers unset, or choose {workers} GPUs with devices=")
    return gpus, len(gpus)


def _code(devices: Devices) -> str:
    return repr(list(devices)) if isinstance(devices, tuple) else repr(devices)


def _seen(visible: Sequence[str]) -> str:
    return f"{len(visible)} (CUDA_VISIBLE_DEVICES entries {list(visible)})" if visible else "none"


# ----------------------------------------------------------------------------- any cluster
@dataclass(frozen=True)
class WorkerDevices:
    """What one worker process has, as torch and the scheduler see it.

    Attributes
    ----------
    address, name, host
        The worker's address, name and host name.
    gpu_resource
        Its ``GPU`` resource (0 when it advertises none).
    gpus
        Identifiers (UUIDs where torch has them) of the CUDA devices torch sees there, in
        ``cuda:N`` order; empty when none.
    env
        Its ``CUDA_VISIBLE_DEVICES`` (``None``: unset).
    cuda_build
        ``torch.version.cuda`` there (``None``: a CPU build of torch).
    """

    address: str
    name: str
    host: str
    gpu_resource: float = 0.0
    gpus: tuple[str, ...] = ()
    env: str | None = None
    cuda_build: str | None = None


def assign_devices(facts: Sequence[WorkerDevices], training: Sequence[str], devices: Devices = "auto"
                   ) -> dict[str, str]:
    """The device of each training worker, by worker name (``"cpu"`` or ``"cuda:N"``).

    ``training`` lists the addresses of the workers that train (not a dedicated parameter
    server's). With ``devices="cpu"`` all train on CPU. Otherwise a worker trains on a GPU when
    it advertises the ``GPU`` resource — or, on a cluster where none does (dask-cuda's
    ``LocalCUDACluster`` sets no resource), when torch sees one there. Each gets the first of
    its GPUs that no other worker of its host has taken, so workers pinned by
    ``CUDA_VISIBLE_DEVICES`` keep their ``cuda:0`` and unpinned ones spread over the GPUs.

    Raises :class:`~psdist.errors.DeviceError` for a worker that advertises ``GPU`` without a
    CUDA device torch can see, and for GPU workers of one host that outnumber its GPUs.
    """
    trains = [f for f in facts if f.address in set(training)]
    if devices == CPU:
        return {f.name: CPU for f in trains}
    blind = sorted((f for f in facts if f.gpu_resource > 0 and not f.gpus), key=lambda f: _order(f.name))
    if blind:
        f = blind[0]
        raise DeviceError(
            f"worker {f.name!r} ({f.address}) advertises GPU={f.gpu_resource:g}, but torch sees no CUDA device "
            f"there ({_blind_reason(f)}); install a CUDA build of torch on it, fix its CUDA_VISIBLE_DEVICES, or "
            "start it without the GPU resource (devices='cpu' trains every worker on CPU)"
        )
    by_resource = any(f.gpu_resource > 0 for f in facts)
    taken: dict[str, dict[str, str]] = {}  # host -> GPU id -> worker name
    out: dict[str, str] = {}
    for f in sorted(trains, key=lambda f: (f.host, _order(f.name))):
        if not f.gpus or (by_resource and f.gpu_resource <= 0):
            out[f.name] = CPU
            continue
        used = taken.setdefault(f.host, {})
        free = [i for i, g in enumerate(f.gpus) if g not in used]
        if not free:
            others = sorted({used[g] for g in f.gpus})
            raise DeviceError(
                f"worker {f.name!r} on {f.host} would share a GPU with worker(s) {others}: the host's "
                f"{len(f.gpus)} GPU(s) are all taken; start one worker process per GPU (pin each with "
                "CUDA_VISIBLE_DEVICES, e.g. dask-cuda's LocalCUDACluster), or train on CPU with devices='cpu'"
            )
        used[f.gpus[free[0]]] = f.name
        out[f.name] = f"cuda:{free[0]}"
    return out


def _order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def _blind_reason(f: WorkerDevices) -> str:
    if f.cuda_build is None:
        return "its torch is a CPU build"
    if f.env is not None and not f.env.strip():
        return "its CUDA_VISIBLE_DEVICES is empty"
    return f"torch {f.cuda_build} finds no device (driver, or CUDA_VISIBLE_DEVICES={f.env!r})"


def describe(assigned: Mapping[str, str], facts: Sequence[WorkerDevices]) -> str:
    """One line for the start-up log: which device each training worker uses."""
    env = {f.name: f.env for f in facts}
    parts = []
    for name in sorted(assigned, key=_order):
        device = assigned[name]
        pinned = f" (CUDA_VISIBLE_DEVICES={env[name]})" if device != CPU and env.get(name) else ""
        parts.append(f"worker {name} on {device}{pinned}")
    return ", ".join(parts) or "no worker"
