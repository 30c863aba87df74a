"""The simulator: the real server state and rules with hundreds of simulated workers."""

from __future__ import annotations

from psdist.sim.simulator import SimResult, SimWorker, heterogeneous, simulate

__all__ = ["SimResult", "SimWorker", "heterogeneous", "simulate"]
