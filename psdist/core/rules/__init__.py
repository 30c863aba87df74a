"""Update rules: how workers make updates and how the server applies them.

A rule is a small frozen, picklable object (its hyperparameters). It makes two strategy objects:

* :meth:`Rule.server_side` — lives inside :class:`psdist.core.server.ServerState`; decides whether a
  push is admitted, how it is applied (through the server optimizer, with which learning-rate
  scale, averaged over a round, or as a direct delta), and when a worker may go on computing.
* :meth:`Rule.worker_side` — lives with each worker's model replica; decides what happens at the
  start of a chunk, after each backward pass and at each communication point (local optimizers
  and local state of elastic averaging and GEM live here).

The Dask shells (actor, worker tasks, trainer) and the simulator only call these interfaces, so
a new rule plugs in without touching them. No Dask import in this package.

=================  ==========================================================================
module             rules
=================  ==========================================================================
``asynchronous``   :class:`Downpour`, :class:`StalenessAware`, :class:`DynSGD`, :class:`DCASGD`
``barrier``        :class:`Sync`, :class:`SSP`
``elastic``        :class:`EASGD`, :class:`EAMSGD`
``gem``            :class:`GEM`
=================  ==========================================================================
"""

from psdist.core.rules.asynchronous import DCASGD, Downpour, DynSGD, StalenessAware
from psdist.core.rules.barrier import SSP, Sync
from psdist.core.rules.base import Rule, ServerRule, WorkerRule, rule_from_config
from psdist.core.rules.elastic import EAMSGD, EASGD
from psdist.core.rules.gem import GEM

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
