"""Update rules (:mod:`psdist.core.rules`), the public name ``psdist.rules``."""

from __future__ import annotations

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
    "Rule",
    "ServerRule",
    "StalenessAware",
    "Sync",
    "WorkerRule",
    "rule_from_config",
]
