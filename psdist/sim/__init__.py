"""The simulator (real server state and rules, simulated time) and the analytic performance model.

``psdist.sim.perf`` and ``psdist.sim.contention`` need only numpy, so their names load lazily
(PEP 562): importing them, or ``psdist.sim`` for the model alone, does not import torch; the
simulator's names load torch on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psdist.sim.contention import core_stretch, effective_cores
    from psdist.sim.perf import (
        Calibration,
        Cluster,
        Prediction,
        Workload,
        calibrate,
        local_cluster,
        micro_points,
        predict,
        predict_table,
        recommend_shards,
        server_step_points,
    )
    from psdist.sim.simulator import SimResult, SimWorker, heterogeneous, simulate

_WHERE = {
    **dict.fromkeys(("SimResult", "SimWorker", "heterogeneous", "simulate"), "psdist.sim.simulator"),
    **dict.fromkeys(("core_stretch", "effective_cores"), "psdist.sim.contention"),
    **dict.fromkeys(("Calibration", "Cluster", "Prediction", "Workload", "calibrate", "micro_points",
                     "predict", "predict_table", "recommend_shards", "server_step_points",
                     "local_cluster"), "psdist.sim.perf"),
}

__all__ = [
    "Calibration",
    "Cluster",
    "Prediction",
    "SimResult",
    "SimWorker",
    "Workload",
    "calibrate",
    "core_stretch",
    "effective_cores",
    "heterogeneous",
    "local_cluster",
    "micro_points",
    "predict",
    "predict_table",
    "recommend_shards",
    "server_step_points",
    "simulate",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'psdist.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
