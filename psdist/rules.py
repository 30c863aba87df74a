"""Update rules (:mod:`psdist.core.rules`), the public name ``psdist.rules``.

``RejectKind`` and ``Rejection`` are what a rule of your own returns from ``ServerRule.admit``.
"""

from __future__ import annotations

from psdist.core.protocol import Rejection, RejectKind
from psdist.core.rules import (
    DCASGD,
    EAMSGD,
    EASGD,
    GEM,
    SSP,
    Downpour,
    DynSGD,
    Rule,
    ServerRule,
    StalenessAware,
    Sync,
    WorkerRule,
    rule_from_config,
)

__all__ = [
    "DCASGD",
    "EAMSGD",
    "EASGD",
    "GEM",
    "SSP",
    "Downpour",
    "DynSGD",
    "RejectKind",
    "Rejection",
    "Rule",
    "ServerRule",
    "StalenessAware",
    "Sync",
    "WorkerRule",
    "rule_from_config",
]
