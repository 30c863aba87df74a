"""The parameter server as a Dask actor: a thin shell around :class:`~psdist.server.ServerState`.

Plain methods run one at a time in the actor's worker thread (Dask runs every plain actor
method of a worker in one thread), so the state needs no lock. They are short numpy work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from psdist.flat import Layout
from psdist.optim import Optimizer
from psdist.protocol import Pull, Push, PushReply
from psdist.rules import Rule
from psdist.server import ServerState

__all__ = ["ParameterServer"]


class ParameterServer:
    """Dask actor holding the master weights; see :class:`~psdist.server.ServerState`.

    Created by the trainer with ``client.submit(ParameterServer, ..., actor=True)`` on the
    worker chosen for it.
    """

    def __init__(
        self,
        layout: dict[str, Any],
        weights: np.ndarray,
        optimizers: dict[str, Optimizer],
        rule: Rule,
        max_staleness: int | None,
    ) -> None:
        self.state = ServerState(Layout.from_dict(layout), weights, optimizers, rule, max_staleness)

    def pull(self, worker: str, have_version: int = -1) -> Pull:
        return self.state.pull(worker, have_version)

    def push(self, push: Push, pull: bool = True) -> PushReply:
        return self.state.push(push, pull)

    def register(self, worker: str, info: dict[str, Any]) -> None:
        self.state.register(worker, **info)

    def set_lr(self, lr: float, group: str | None = None) -> float:
        self.state.set_lr(lr, group)
        return self.state.lr

    def metrics(self) -> dict[str, Any]:
        return self.state.metrics()

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self.state.state_dict()

    def load_state_dict(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> int:
        self.state.load_state_dict(scalars, arrays)
        return self.state.version
