"""Parameter-server microbenchmark: psdist's pull and push, per backend, vs memcpy and a torch RPC.

    python -m benchmarks.suite.ps_micro --spec spec.json     # spec: out, sizes, reps

``sizes`` (float32 parameters) default to 1e5, 1e6 and 4e6 and ``reps`` to 20 (run_suite passes
its own per suite size). For each size, ways of moving the same bytes, in one process tree:

- ``memcpy``: ``np.copyto`` of the vector (the floor: one copy in one process; the "round
  trip" figure copies it twice, like a push that carries the gradient there and the weights
  back);
- ``psdist``: a ``ParameterServer`` actor on one Dask worker, called from a task on a second
  worker of the same embedded cluster (where psdist's chunk tasks run): ``pull`` (fresh weights
  every time), ``push`` of a gradient with ``pull=True`` (what a Downpour worker does after
  every minibatch: the SGD step on the server plus the new weights in the reply), and ``push``
  without the reply. Per backend: ``actor`` (the Dask actor's methods; the flat ``psdist_*``
  keys), and the data plane beside it (``row["plane"]``): ``shm`` (memfd slots and a Unix
  socket), ``tcp`` (one TCP connection), ``tcp+bf16`` (``tcp`` with ``wire_dtype="bf16"``: the
  gradient and the reply's weights cross as bf16, converted on both sides), ``tcp+tls`` (``tcp``
  on a second embedded cluster started with ``security=True``; ``skipped`` with the reason when
  it cannot start). Every push reuses one gradient array (over ``shm`` the client's shared
  gradient slot, :meth:`~psdist.plane.PlaneClient.push_buffer`, where a training worker's
  ``Replica.gradient_update(out=...)`` writes it: no copy at the push); the reply's weights are
  not copied out;
- ``torch RPC``: two processes on TensorPipe: a fetch of a tensor of that size (like a pull)
  and an echo round trip sending and receiving it (like a push with its reply).

Times are medians over ``reps`` calls after warm-up calls; bytes/s counts the float32 vectors
moved (one for a pull or fetch, two for a push-with-reply or echo; ``tcp+bf16`` sends half those
bytes to move them).
``push_pull_over_rpc_echo`` (per backend) is push+pull over the torch RPC echo.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from benchmarks.suite import common

WARMUP = 3


def _median_s(fn: Any, reps: int) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def memcpy(n: int, reps: int) -> dict[str, float]:
    src = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    dst = np.empty_like(src)
    one = _median_s(lambda: np.copyto(dst, src), reps)
    return {"copy_s": one, "round_trip_s": 2 * one}


# ---------------------------------------------------------------------------- psdist
class _Skipped(Exception):
    """A backend that cannot run here (the TLS cluster did not start): a reason, never numbers."""


def _time_calls(pull: Any, push: Any, reps: int) -> dict[str, float]:
    """Medians of ``pull()``, ``push(True)`` (with the weights in the reply) and ``push(False)``."""
    return {"pull_s": _median_s(pull, reps), "push_pull_s": _median_s(lambda: push(True), reps),
            "push_only_s": _median_s(lambda: push(False), reps)}


def _time_actor(ps: Any, grad: np.ndarray, reps: int) -> dict[str, float]:
    from psdist.core.protocol import Push

    state = {"version": ps.pull("bench", -1).result().version}

    def pull() -> None:
        ps.pull("bench", -1).result()  # -1: the weights always come back

    def push(reply: bool) -> None:
        r = ps.push(Push("bench", state["version"], grad, 128, 0.5), reply).result()
        state["version"] = r.version

    return _time_calls(pull, push, reps)


def _time_plane(ps: Any, backend: str, grad: np.ndarray, reps: int) -> dict[str, float]:
    from distributed import get_worker

    from psdist.core.protocol import Push
    from psdist.plane import PlaneClient

    worker = get_worker()
    endpoint = ps.plane_endpoint().result()
    kind, tls = backend.split("+")[0], backend.endswith("+tls")
    wire_dtype = "bf16" if backend.endswith("+bf16") else "float32"
    if bool(endpoint.get("tls")) != tls:
        raise RuntimeError(f"{backend}: the parameter server's data plane has tls={endpoint.get('tls')}")
    ssl = worker.security.get_connection_args("worker").get("ssl_context") if tls else None
    client = PlaneClient.connect(endpoint, worker.address, kind, timeout=60, ssl_context=ssl, wire_dtype=wire_dtype)
    try:
        if (client.backend, client.wire_dtype) != (kind, wire_dtype):
            raise RuntimeError(f"asked for {backend}, connected over {client.backend} ({client.wire_dtype})")
        state = {"version": client.pull(worker.address, -1).version}
        slot = client.push_buffer()
        if slot is not None:  # shared memory: training computes its gradient into this slot
            np.copyto(slot, grad)
            grad = slot

        def pull() -> None:
            client.pull(worker.address, -1)  # -1: the weights always come back

        def push(reply: bool) -> None:
            r = client.push(Push(worker.address, state["version"], grad, 128, 0.5), pull=reply)
            state["version"] = r.version

        return _time_calls(pull, push, reps)
    finally:
        client.close()


def _bench_task(ps: Any, n: int, reps: int, backends: list[str]) -> dict[str, dict[str, Any]]:
    """Runs on a data worker: times calls to the PS on the other worker, per backend.

    ``actor``: the Dask actor's ``pull``/``push`` (pickled messages over Dask's worker-to-worker
    comm); ``shm``/``tcp``/``tcp+bf16``/``tcp+tls``: a :class:`~psdist.plane.PlaneClient` on the
    actor's data plane (``tcp+bf16``: with ``wire_dtype="bf16"``; ``tcp+tls`` is ``tcp`` on a TLS
    cluster). One gradient array is reused for every push
    (as a worker's flat gradient buffer is); the weights of a reply are not copied out (over the
    plane they are a view of the client's buffer, valid until the next call; ``Replica.load``
    copies them, which ``memcpy copy`` measures).
    """
    grad = np.full(n, 1e-6, np.float32)
    out: dict[str, dict[str, Any]] = {}
    for backend in backends:
        try:
            times = _time_actor(ps, grad, reps) if backend == "actor" else _time_plane(ps, backend, grad, reps)
            out[backend] = {"status": "ok", **times}
        except Exception as exc:  # one backend's failure is its row's reason, not the run's
            out[backend] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    return out


def psdist_calls(sizes: list[int], reps: int, backends: tuple[str, ...] = ("actor", "shm", "tcp", "tcp+bf16"),
                 security: bool = False) -> dict[int, dict[str, dict[str, Any]]]:
    """Per size and backend: ``{status, pull_s, push_pull_s, push_only_s}`` (or a reason).

    One embedded cluster (TLS everywhere with ``security``): the PS actor on the last worker,
    the timing task on the first, so every call crosses processes as a training chunk's does.
    Raises :class:`_Skipped` when a TLS cluster cannot start.
    """
    import torch

    from psdist.cluster import embedded_cluster
    from psdist.cluster.actor import ParameterServer
    from psdist.optim import SGD
    from psdist.replica import layout_of
    from psdist.rules import Downpour

    try:  # worker 0 calls, 1 serves
        cluster, client = embedded_cluster(1, 1, True, dashboard_address=None, security=True if security else None)
    except Exception as exc:
        if not security:
            raise
        raise _Skipped(f"the TLS cluster did not start: {type(exc).__name__}: {exc}"[:500]) from exc
    try:
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"].items(), key=lambda kv: str(kv[1]["name"]))
        caller, server = workers[0][0], workers[-1][0]
        out = {}
        for n in sizes:
            layout = layout_of({"model": torch.nn.Linear(n, 1, bias=False)})
            weights = np.zeros(n, np.float32)
            fut = client.submit(ParameterServer, layout.to_dict(), weights, {"model": SGD(lr=0.01, momentum=0.9)},
                                Downpour(), None, actor=True, workers=[server],
                                key=f"bench-ps-{n}{'-tls' if security else ''}")
            ps = fut.result()
            try:
                out[n] = client.submit(_bench_task, ps, n, reps, list(backends), workers=[caller],
                                       pure=False).result()
            finally:
                try:
                    ps.close_plane().result()
                except Exception:  # best effort: the actor's cancellation closes it too
                    pass
                client.cancel([fut])
                del ps
        return out
    finally:
        client.close()
        cluster.close()


def psdist_breakdown(n: int, reps: int) -> dict[str, float]:
    """Where a push-with-reply goes, in-process: the server's own work and (de)serialisation.

    ``server_push_s``: ``ServerState.push(pull=True)`` (admission checks, the SGD step, the
    reply's read-only snapshot); ``pickle_s``: pickling the push and the reply with protocol 5
    (out-of-band buffers, as Dask does) and unpickling them. What the actor call costs beyond
    their sum is Dask's transport: messages, event loop and actor-thread hand-offs.

    The shared-memory backend's server side, piece by piece: ``server_push_into_s``
    (``ServerState.push(pull=True, into=slot)``: the weights copied once, into the worker's
    slot), ``server_finite_s`` (its finite check: one pass over the update), ``server_step_s``
    (the optimizer's step alone) and ``server_copy_s`` (the copy into the slot alone), on one
    torch thread as the actor on the benchmark's one-thread worker runs them (``server_push_s``
    keeps this process's threads, as it always did). The optimizer is torch's SGD with momentum.
    """
    import pickle

    import torch

    from psdist.core.protocol import Push
    from psdist.core.server import ServerState
    from psdist.optim import SGD
    from psdist.replica import layout_of
    from psdist.rules import Downpour

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the actor on a one-thread worker (the benchmark's server)
    layout = layout_of({"model": torch.nn.Linear(n, 1, bias=False)})
    state = ServerState(layout, np.zeros(n, np.float32), {"model": SGD(lr=0.01, momentum=0.9)}, Downpour())
    grad = np.full(n, 1e-6, np.float32)
    slot = np.zeros(n, np.float32)

    def push() -> Any:
        return state.push(Push("bench", state.version, grad, 128, 0.5), True)

    reply = push()
    optimizer = state.optimizers["model"]
    try:
        pieces = {"server_push_into_s": _median_s(
                      lambda: state.push(Push("bench", state.version, grad, 128, 0.5), True, slot), reps),
                  "server_finite_s": _median_s(lambda: state._finite(grad), reps),
                  "server_step_s": _median_s(lambda: optimizer.step(grad), reps),
                  "server_copy_s": _median_s(lambda: np.copyto(slot, state.weights), reps)}
    finally:
        torch.set_num_threads(threads)

    def roundtrip() -> None:
        for obj in (Push("bench", state.version, grad, 128, 0.5), reply):
            bufs: list[Any] = []
            data = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
            pickle.loads(data, buffers=[b.raw() for b in bufs])

    return {"server_push_s": _median_s(push, reps), "pickle_s": _median_s(roundtrip, reps), **pieces}


# ---------------------------------------------------------------------------- torch RPC
_HELD: dict[int, Any] = {}


def _fetch(n: int) -> Any:
    import torch

    if n not in _HELD:
        _HELD[n] = torch.zeros(n)
    return _HELD[n]


def _echo(t: Any) -> Any:
    return t


def _rpc_rank(rank: int, port: int, sizes: list[int], reps: int, out: str) -> None:
    import torch
    import torch.distributed.rpc as rpc

    common.ensure_path()
    torch.set_num_threads(1)
    os.environ.update(TP_SOCKET_IFNAME="lo", GLOO_SOCKET_IFNAME="lo")
    opts = rpc.TensorPipeRpcBackendOptions(init_method=f"tcp://127.0.0.1:{port}", num_worker_threads=4)
    rpc.init_rpc(f"r{rank}", rank=rank, world_size=2, rpc_backend_options=opts)
    if rank == 0:
        res = {}
        for n in sizes:
            t = torch.randn(n)
            res[str(n)] = {"fetch_s": _median_s(lambda n=n: rpc.rpc_sync("r1", _fetch, args=(n,)), reps),
                           "echo_s": _median_s(lambda t=t: rpc.rpc_sync("r1", _echo, args=(t,)), reps)}
        common.write_json(out, res)
    rpc.shutdown()


def rpc_calls(sizes: list[int], reps: int, tmp: str) -> dict[int, dict[str, float]]:
    import json

    import torch.multiprocessing as mp

    from benchmarks.suite import c_rpc, ps_micro

    path = os.path.join(tmp, "rpc_micro.json")
    mp.spawn(ps_micro._rpc_rank, args=(c_rpc.free_port(), sizes, reps, path), nprocs=2, join=True)
    with open(path) as f:
        return {int(k): v for k, v in json.load(f).items()}


#: the psdist backends of a row: the actor, and the data plane's four (``tcp+tls``: a TLS cluster)
BACKENDS = ("actor", "shm", "tcp", "tcp+bf16", "tcp+tls")
PLANE = BACKENDS[1:]
DEFAULT_SIZES = [100_000, 1_000_000, 4_000_000]
DEFAULT_REPS = 20


def _backend_entry(b: dict[str, Any] | None, mb: int, echo_s: float | None, missing: str) -> dict[str, Any]:
    """One backend's numbers at one size (ms, payload GB/s, push+pull over the torch RPC echo)."""
    if b is None:
        return {"status": "error", "reason": missing}
    if b.get("status") != "ok":
        return {"status": b.get("status", "error"), "reason": b.get("reason") or missing}
    entry: dict[str, Any] = {"status": "ok"}
    for key, moved in (("pull", mb), ("push_pull", 2 * mb), ("push_only", mb)):
        val = b.get(f"{key}_s")
        entry[f"{key}_ms"] = None if val is None else 1000 * val
        entry[f"{key}_gb_s"] = None if not val else moved / val / 1e9
    entry["push_pull_over_rpc_echo"] = b["push_pull_s"] / echo_s if b.get("push_pull_s") and echo_s else None
    return entry


def main(argv: list[str] | None = None) -> int:
    spec = common.parse(argv)
    common.ensure_path()
    sizes = [int(s) for s in spec.get("sizes") or DEFAULT_SIZES]
    reps = int(spec.get("reps") or DEFAULT_REPS)
    out = common.Output(spec, "ps_micro")
    parts: dict[str, dict[int, Any]] = {}
    failed: dict[str, str] = {}  # part -> why it has no numbers
    skipped: dict[str, str] = {}
    for label, fn in (("memcpy", lambda: {n: memcpy(n, reps) for n in sizes}),
                      ("psdist", lambda: psdist_calls(sizes, reps)),
                      ("tls", lambda: psdist_calls(sizes, reps, ("tcp+tls",), security=True)),
                      ("torch_rpc", lambda: rpc_calls(sizes, reps, os.path.dirname(spec["out"]))),
                      ("breakdown", lambda: {n: psdist_breakdown(n, reps) for n in sizes})):
        try:
            parts[label] = fn()
        except _Skipped as exc:
            skipped[label] = str(exc)
            parts[label] = {}
        except Exception as exc:
            out.error(label, exc)
            failed[label] = f"{type(exc).__name__}: {exc}"[:500]
            parts[label] = {}
    for n in sizes:
        mb = 4 * n
        m, r = parts["memcpy"].get(n, {}), parts["torch_rpc"].get(n, {})
        by_backend = {**parts["psdist"].get(n, {}), **parts["tls"].get(n, {})}
        p = by_backend.get("actor") or {}
        b = parts["breakdown"].get(n, {})
        row: dict[str, Any] = {"status": "ok", "params": n, "bytes": mb, "reps": reps}
        for key, val, moved in (("memcpy_copy", m.get("copy_s"), mb), ("memcpy_round_trip", m.get("round_trip_s"), 2 * mb),
                                ("psdist_pull", p.get("pull_s"), mb), ("psdist_push_pull", p.get("push_pull_s"), 2 * mb),
                                ("psdist_push_only", p.get("push_only_s"), mb),
                                ("rpc_fetch", r.get("fetch_s"), mb), ("rpc_echo", r.get("echo_s"), 2 * mb)):
            row[f"{key}_ms"] = None if val is None else 1000 * val
            row[f"{key}_gb_s"] = None if not val else moved / val / 1e9
        for key in ("server_push_s", "pickle_s", "server_push_into_s", "server_finite_s", "server_step_s",
                    "server_copy_s"):
            row[f"psdist_{key[:-2]}_ms"] = None if key not in b else 1000 * b[key]
        if p.get("push_pull_s") and b:  # the rest of a push-with-reply: Dask's transport
            row["psdist_transport_ms"] = 1000 * max(0.0, p["push_pull_s"] - b["server_push_s"] - b["pickle_s"])
        if p.get("push_pull_s") and r.get("echo_s"):
            row["psdist_over_rpc"] = p["push_pull_s"] / r["echo_s"]
        # the data plane's backends, nested (the flat psdist_* keys above stay the actor's)
        row["plane"] = {}
        for backend in PLANE:
            part = "tls" if backend == "tcp+tls" else "psdist"
            if part in skipped:
                row["plane"][backend] = {"status": "skipped", "reason": skipped[part]}
                continue
            why = f"the {part} part failed: {failed[part]}" if part in failed else "no result"
            row["plane"][backend] = _backend_entry(by_backend.get(backend), mb, r.get("echo_s"), why)
        actor = _backend_entry(by_backend.get("actor"), mb, r.get("echo_s"),
                               f"the psdist part failed: {failed['psdist']}" if "psdist" in failed else "no result")
        row["push_pull_over_rpc_echo"] = {"actor": actor.get("push_pull_over_rpc_echo"),
                                          **{k: v.get("push_pull_over_rpc_echo") for k, v in row["plane"].items()}}
        if actor["status"] != "ok":
            row["actor_status"] = actor
        out.add(str(n), row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
