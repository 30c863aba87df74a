"""The Dask layer, the only one that imports distributed / dask-jobqueue: the parameter-server
actor, worker plugins, chunk tasks and their runner, the session, the embedded cluster, batch
systems, security."""

from __future__ import annotations

from psdist.cluster.embedded import embedded_cluster, malloc_config, pick_ps_worker, training_slots

__all__ = ["embedded_cluster", "malloc_config", "pick_ps_worker", "training_slots"]
