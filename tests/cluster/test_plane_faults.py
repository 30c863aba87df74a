"""Faults on the data plane, for real: processes SIGKILLed, a parameter server lost and restored.

The fault tests of test_faults.py run with ``data_plane="auto"`` (shared memory on one host);
these force each backend and look at the plane itself: which server each worker's connection
reaches after a restart, what the new server's plane served (``ParameterServer.plane_counters``),
a worker process killed in the middle of a frame, and plaintext knocking on a TLS cluster's port.
Kills happen at a chunk count or after a handshake on a pipe, never after a sleep.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
import test_faults as faults
from test_faults import BATCH, CE, CHUNK, ROWS, mlp

import psdist
import psdist.core.optim as flat
from psdist.cluster import embedded_cluster
from psdist.core.inprocess import LocalServer
from psdist.core.layout import Entry, FlatSpec, Layout
from psdist.core.protocol import Push
from psdist.core.rules import Sync
from psdist.core.server import ServerState
from psdist.errors import ServerError
from psdist.plane import PlaneClient, PlaneServer, wire

PUSHES_PER_CHUNK = 4
# the fault tests' fixtures (16 chunks of 4 pushes each; a cluster of processes the test breaks)
data, cluster_client = faults.data, faults.cluster_client


def plane_of(dask_worker: Any, plugin: str) -> dict[str, Any] | None:
    """On a worker (``client.run``): this run's data-plane connection there, or None."""
    run = dask_worker.plugins.get(plugin)
    plane = run.plane if run is not None else None
    if plane is None:
        return None
    try:
        peer = plane.sock.getpeername()
    except OSError:
        peer = None  # closed
    return {"backend": plane.backend, "broken": plane.broken,
            "peer": peer.decode() if isinstance(peer, bytes) else list(peer[:2]) if peer else None}


def address_of(endpoint: dict[str, Any], backend: str) -> Any:
    """Where a worker's connection to ``endpoint`` over ``backend`` leads (its peer name)."""
    return endpoint["unix"] if backend == "shm" else [endpoint["host"], endpoint["port"]]


class Probe:
    """A progress callback: records chunk events with the parameter server of their moment,
    SIGKILLs a worker at the ``n``-th chunk event, and reads the plane at the last epoch's end
    (the parameter server and its data plane are gone once ``fit`` returns)."""

    def __init__(self, trainer: psdist.Trainer, n: int, epochs: int, target: Any = None) -> None:
        self.trainer, self.client, self.n, self.epochs = trainer, trainer.settings.scaling.client, n, epochs
        self.pids = self.client.run(os.getpid)
        self.target = target or self.busy_data_worker
        self.chunks: list[tuple[dict, str]] = []  # (event, parameter server's address then)
        self.killed: list[str] = []
        self.before: dict[str, Any] = {}  # the plane at the kill, before it
        self.after: dict[str, Any] = {}  # the plane at the end of the last epoch

    def busy_data_worker(self, t: psdist.Trainer) -> str | None:
        """A data worker running a chunk now (None between two tasks: the next event tries again)."""
        return next((w for w, keys in self.client.processing().items() if w != t.ps_address and keys), None)

    def plane(self) -> dict[str, Any]:
        t = self.trainer
        ps = t._sess.ps  # the live session's actor (a restarted server's after a restart)
        return {"ps": t.ps_address, "endpoint": ps.plane_endpoint().result(timeout=30),
                "counters": ps.plane_counters().result(timeout=30),
                "metrics": ps.metrics().result(timeout=30),
                "workers": {w: p for w, p in self.client.run(plane_of, plugin=f"psdist-run-{t.run_id}").items()
                            if p is not None}}

    def __call__(self, ev: dict) -> None:
        if ev["event"] == "epoch" and ev["record"]["epoch"] == self.epochs:
            self.after = self.plane()
        if ev["event"] != "chunk":
            return
        self.chunks.append((ev, self.trainer.ps_address))
        if len(self.chunks) >= self.n and not self.killed:
            before = self.plane()
            victim = self.target(self.trainer)
            if victim is None:
                return
            self.before = before
            self.killed.append(victim)
            os.kill(self.pids[victim], signal.SIGKILL)


def trainer(data: psdist.ZarrDataset, client: Any, **kw: Any) -> psdist.Trainer:
    return psdist.Trainer(mlp, CE, data, optimizer=psdist.optim.SGD(lr=0.1), batch_size=BATCH,
                          client=client, seed=0, **kw)


# ----------------------------------------------------------------------------- a lost parameter server
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tcp", "shm"])
def test_killed_parameter_server_restarts_and_workers_reconnect_to_its_data_plane(data, cluster_client, backend):
    every = 8  # versions between recovery points (2 chunks)
    t = trainer(data, cluster_client, data_plane=backend, checkpoints=psdist.Checkpoints(every_versions=every))
    probe = Probe(t, 7, 2, target=lambda t: t.ps_address)  # mid-epoch 1: the PS's process
    history = t.fit(2, progress=probe)
    first, last = history[0], history[1]
    old, new = probe.before, probe.after
    assert probe.killed == [old["ps"]] and first["ps_restarts"] == 1 and new["ps"] != old["ps"]
    assert last["val_accuracy"] >= 0.95
    for rec in history:
        assert rec["chunks"] == ROWS // CHUNK and rec["samples"] == ROWS

    # before the kill: the workers that trained were connected to the first server's plane
    assert old["workers"] and old["counters"]["open"]
    for w, p in old["workers"].items():
        assert p == {"backend": backend, "broken": False, "peer": address_of(old["endpoint"], backend)}, w
    # at the end: every worker's connection is to the new server's endpoint, by the forced backend
    assert address_of(new["endpoint"], backend) != address_of(old["endpoint"], backend)
    assert new["workers"]
    for w, p in new["workers"].items():
        assert p == {"backend": backend, "broken": False, "peer": address_of(new["endpoint"], backend)}, w
    counters = new["counters"]
    assert counters["connections"] == len(new["workers"]) and counters["refused"] == 0
    # every push the new server received came over its plane (none through the actor) ...
    received = {w: s["pushes"] for w, s in new["metrics"]["workers"].items() if s["pushes"]}
    assert set(received) <= set(new["workers"])
    assert counters["pushes"] == sum(received.values()) > 0 and counters["pulls"] > 0 and counters["waits"] > 0
    assert t.server_metrics["workers"] == new["metrics"]["workers"]  # nothing came after the probe
    # ... and is a push of a chunk reported after the restart: none orphaned, none lost
    after_restart = [ev for ev, ps in probe.chunks if ps == new["ps"]]
    assert sum(ev["pushes"] for ev in after_restart) == counters["pushes"]
    epoch2 = [ev for ev, _ in probe.chunks if ev["epoch"] == 2]
    assert len(epoch2) == ROWS // CHUNK and last["pushes_orphaned"] == 0
    assert last["pushes_applied"] + last["pushes_rejected"] == sum(ev["pushes"] for ev in epoch2)


# ----------------------------------------------------------------------------- a lost data worker
@pytest.mark.slow
def test_killed_data_worker_over_tcp_does_not_hold_a_sync_barrier_and_every_push_is_accounted(data, cluster_client):
    t = trainer(data, cluster_client, data_plane="tcp", rule=psdist.rules.Sync(), timeout=120)
    probe = Probe(t, 3, 1)  # a data worker running a chunk
    rec = t.fit(1, progress=probe).last
    assert probe.killed and rec["workers_lost"] == 1
    assert rec["chunks"] == ROWS // CHUNK and rec["samples"] == ROWS and rec["val_accuracy"] >= 0.95
    assert t.server_metrics["evicted"] == 0  # nobody waited out the 120 s timeout to be evicted
    victim = probe.killed[0]
    # every push the server received is a finished chunk's, except the killed attempt's
    server = {w: s["pushes"] for w, s in t.server_metrics["workers"].items()}
    reported: dict[str, int] = {}
    for ev, _ in probe.chunks:
        reported[ev["worker"]] = reported.get(ev["worker"], 0) + ev["pushes"]
    for w, n in server.items():
        if w != victim:
            assert n == reported.get(w, 0), w
    orphans = server.get(victim, 0) - reported.get(victim, 0)
    # what died with the victim: the attempt it was running, and a chunk it finished while the
    # client sat in this very progress callback (its result, not fetched yet, died with it too)
    assert rec["pushes_orphaned"] == orphans and 0 <= orphans <= 2 * PUSHES_PER_CHUNK
    assert sum(server.values()) == rec["pushes_applied"] + rec["pushes_rejected"]
    # all of them over TCP: the victim's connection and the others', none through the actor
    after = probe.after
    assert after["workers"] and all(p["backend"] == "tcp" and not p["broken"] for p in after["workers"].values())
    assert victim not in after["workers"] and victim not in after["metrics"]["active"]
    assert after["counters"]["pushes"] == sum(server.values())
    # the victim's connection too, if it was made before the kill (it may have died registering)
    assert len(after["workers"]) <= after["counters"]["connections"] <= len(after["workers"]) + 1


# ----------------------------------------------------------------------------- a worker killed mid-frame
N = 1000
# a worker process: connects, joins a Sync round, then sends half a push frame and is killed there
DOOMED = r"""
import json, sys
import numpy as np
from psdist.plane import PlaneClient, wire

cfg = json.loads(sys.stdin.readline())
n, shm = cfg["endpoint"]["size"], cfg["backend"] == "shm"
c = PlaneClient.connect(cfg["endpoint"], "doomed", cfg["backend"], timeout=30)
c.join("doomed")
assert c.wait("doomed", -1).version == 0  # a member of the round now; its reply read to the end
poison = np.full(n, 1e30, np.float32)  # must never reach the weights
header = wire.encode(wire.Frame(wire.Kind.PUSH, wire.WANT_PULL, a=0, b=8, x=0.5, payload=0 if shm else 4 * n))
if shm:  # the gradient in the shared slot, and half the doorbell's header
    c.slots.grad[:] = poison
    c.sock.sendall(header[: len(header) // 2])
else:  # the header and half the gradient
    c.sock.sendall(header + poison.tobytes()[: 2 * n])
print("sent", flush=True)
sys.stdin.readline()  # held here until SIGKILLed
"""


def sync_state() -> ServerState:
    lay = Layout.of({"model": FlatSpec((Entry("w", (N,), "float32", 0, "param"),), N)})
    s = ServerState(lay, np.linspace(-1, 1, N).astype(np.float32), {"model": flat.SGD(lr=0.5)},
                    Sync(), max_staleness=None)
    return s


@pytest.mark.parametrize("backend", ["tcp", "shm"])
def test_worker_killed_mid_frame_is_dropped_with_a_reason_and_leaves_the_round(backend, caplog):
    s = sync_state()
    local = LocalServer(s, timeout=10)
    plane = PlaneServer.start(local, N, "127.0.0.1")
    endpoint = plane.endpoint()
    keeper = PlaneClient.connect(endpoint, "keeper", backend, timeout=10)  # a wait holds 10 s at most
    u1, u2 = (np.random.default_rng(k).standard_normal(N).astype(np.float32) for k in (1, 2))
    twin = sync_state()  # the keeper alone: what the server must hold
    twin.join("keeper")
    for u in (u1, u2):
        twin.push(Push("keeper", twin.version, u.copy(), 8, 0.5))
    doomed = None
    try:
        keeper.join("keeper")
        assert keeper.wait("keeper", -1).version == 0
        threads = set(threading.enumerate())
        doomed = subprocess.Popen([sys.executable, "-c", DOOMED], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        with caplog.at_level(logging.WARNING, logger="psdist.plane.server"):
            doomed.stdin.write(json.dumps({"endpoint": endpoint, "backend": backend}) + "\n")
            doomed.stdin.flush()
            assert doomed.stdout.readline() == "sent\n"  # joined, and half a frame is on its way
            conn = [th for th in set(threading.enumerate()) - threads if th.name == "psdist-plane-conn"]
            assert len(conn) == 1 and sorted(s.active) == ["doomed", "keeper"]
            held = keeper.push(Push("keeper", 0, u1, 8, 0.5), pull=True)
            assert held.applied and held.wait and s.version == 0  # the round waits for doomed
            doomed.kill()
            assert doomed.wait(30) == -signal.SIGKILL
            # the round closes without it: the keeper is let go (a barrier still waiting would
            # hold it 10 s and raise)
            assert keeper.wait("keeper", 0).version == 1
            conn[0].join(30)  # the dead worker's connection thread has ended: dropped, and said why
            assert not conn[0].is_alive()
        expected = ("connection closed after 26 of 52 bytes of a frame" if backend == "shm"
                    else f"connection closed after {2 * N} of {4 * N} bytes of a frame")
        assert plane.counters.refused == 1 and expected in plane.counters.reasons[-1]
        logged = [r.getMessage() for r in caplog.records if r.name == "psdist.plane.server"]
        assert len(logged) == 1 and "closed the connection of doomed" in logged[0] and expected in logged[0]
        assert "doomed" not in s.active and "doomed" not in s.workers  # the half push never counted
        # the keeper is served on: its next push and pull give the twin's weights, bit for bit
        reply = keeper.push(Push("keeper", 1, u2, 8, 0.5), pull=True)
        assert reply.applied and not reply.wait and reply.version == 2
        assert reply.pull.weights.tobytes() == twin.weights.tobytes() == s.weights.tobytes()
        assert keeper.pull("keeper", -1).weights.tobytes() == twin.weights.tobytes()
        assert np.isfinite(s.weights).all() and plane.counters.connections == 2
    finally:
        if doomed is not None and doomed.poll() is None:
            doomed.kill()
            doomed.wait(30)
        keeper.close()
        plane.close()


# ----------------------------------------------------------------------------- a TLS cluster's data plane
def test_plaintext_is_refused_by_the_data_plane_of_a_tls_cluster():
    """The actor's plane on a tls:// cluster: plaintext (even with the run's token) gets no byte
    back and is counted refused; a client with the cluster's certificate pushes and pulls."""
    pytest.importorskip("cryptography")
    from psdist.cluster import pick_ps_worker
    from psdist.cluster.actor import ParameterServer
    from psdist.optim import SGD
    from psdist.replica.binding import flatten, spec_of
    from psdist.rules import Downpour

    cluster, client = embedded_cluster(workers=1, threads_per_worker=1, dashboard_address=None, security=True)
    future = None
    try:
        model = mlp()
        spec = spec_of(model)
        w0 = flatten(model, spec)
        ps_address, _ = pick_ps_worker(client)
        assert ps_address.startswith("tls://")
        future = client.submit(ParameterServer, Layout.of({"model": spec}).to_dict(), w0, {"model": SGD(lr=0.5)},
                               Downpour(), None, actor=True, workers=[ps_address], pure=False)
        ps = future.result(timeout=60)
        endpoint = ps.plane_endpoint().result(timeout=30)
        assert endpoint["tls"] and endpoint["unix"] is None  # no shared memory on a TLS cluster
        with pytest.raises(ServerError, match="the hello over the data plane failed"):
            PlaneClient.connect({**endpoint, "tls": False}, "plaintext", "tcp", timeout=10)
        # a plaintext hello with the right token: not a byte comes back, the connection ends
        hello = wire.encode(wire.Frame(wire.Kind.HELLO, meta={"token": endpoint["token"], "worker": "p",
                                                              "size": w0.size}))
        got = b""
        with socket.create_connection((endpoint["host"], endpoint["port"]), timeout=10) as raw:
            raw.sendall(hello)
            try:
                while chunk := raw.recv(65536):
                    got += chunk
            except ConnectionResetError:
                pass
        assert got == b""
        ssl = cluster.security.get_connection_args("worker")["ssl_context"]
        c = PlaneClient.connect(endpoint, "w", "tcp", timeout=10, ssl_context=ssl)
        g = np.linspace(-1, 1, w0.size).astype(np.float32)
        reply = c.push(Push("w", 0, g, 8, 0.5), pull=True)
        assert reply.applied and reply.version == 1
        np.testing.assert_array_equal(reply.pull.weights, w0 - np.float32(0.5) * g)
        c.close()
        counters = ps.plane_counters().result(timeout=30)
        assert counters["refused"] == 2 and counters["connections"] == 1 and counters["pushes"] == 1
        assert all("SSL" in r for r in counters["reasons"])
        assert ps.metrics().result(timeout=30)["workers"]["w"]["pushes"] == 1
        with pytest.raises(ServerError, match="runs TLS; this worker has no cluster certificate"):
            PlaneClient.connect(endpoint, "w", "tcp", timeout=10)  # (its refusal, server side, not counted above)
    finally:
        if future is not None:
            client.cancel([future])
        client.close()
        cluster.close()
