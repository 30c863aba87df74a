"""HEP workloads: datasets that can be made offline, and the models of the seed benchmarks."""

from __future__ import annotations

__all__: list[str] = []
