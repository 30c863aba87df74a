"""The data plane: pushes and pulls beside the Dask actor, without pickle.

:mod:`~psdist.plane.wire` (frames), :mod:`~psdist.plane.server` (the parameter server's
listener, a thread per worker), :mod:`~psdist.plane.client` (a worker's connection),
:mod:`~psdist.plane.shm` (same-host shared-memory slots). No Dask here: the actor
(:mod:`psdist.cluster.actor`) starts the server and hands workers its endpoint and token.
"""

from __future__ import annotations

from psdist.plane.client import BACKENDS, WIRE_DTYPES, PlaneClient
from psdist.plane.server import PlaneServer, Served

__all__ = ["BACKENDS", "WIRE_DTYPES", "PlaneClient", "PlaneServer", "Served"]
