"""Parameter-server microbenchmark: psdist's actor pull and push vs memcpy and a torch RPC.

    python -m benchmarks.suite.ps_micro --spec spec.json     # spec: sizes, reps, out

For each size (float32 parameters) three ways of moving the same bytes, in one process tree:

- ``memcpy``: ``np.copyto`` of the vector (the floor: one copy in one process; the "round
  trip" figure copies it twice, like a push that carries the gradient there and the weights
  back);
- ``psdist``: a ``ParameterServer`` actor on one Dask worker, called from a task on a second
  worker (where psdist's chunk tasks run): ``pull`` (fresh weights every time) and ``push``
  of a gradient with ``pull=True`` (what a Downpour worker does after every minibatch: the
  SGD step on the server plus the new weights in the reply), and ``push`` without the reply;
- ``torch RPC``: two processes on TensorPipe: a fetch of a tensor of that size (like a pull)
  and an echo round trip sending and receiving it (like a push with its reply).

Times are medians over ``reps`` calls after warm-up calls; bytes/s counts the payload bytes
that cross (one vector for a pull or fetch, two for a push-with-reply or echo).
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
def _psdist_task(ps: Any, n: int, reps: int) -> dict[str, float]:
    """Runs on a data worker: times calls to the actor on the other worker."""
    from psdist.core.protocol import Push

    grad = np.full(n, 1e-6, np.float32)
    state = {"version": ps.pull("bench", -1).result().version}

    def pull() -> None:
        ps.pull("bench", -1).result()  # -1: the weights always come back

    def push(reply: bool) -> None:
        r = ps.push(Push("bench", state["version"], grad, 128, 0.5), reply).result()
        state["version"] = r.version

    return {"pull_s": _median_s(pull, reps), "push_pull_s": _median_s(lambda: push(True), reps),
            "push_only_s": _median_s(lambda: push(False), reps)}


def psdist_calls(sizes: list[int], reps: int) -> dict[int, dict[str, float]]:
    import torch

    from psdist.cluster import embedded_cluster
    from psdist.cluster.actor import ParameterServer
    from psdist.optim import SGD
    from psdist.replica import layout_of
    from psdist.rules import Downpour

    cluster, client = embedded_cluster(1, 1, True, dashboard_address=None)  # worker 0 calls, 1 serves
    try:
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"].items(), key=lambda kv: str(kv[1]["name"]))
        caller, server = workers[0][0], workers[-1][0]
        out = {}
        for n in sizes:
            layout = layout_of({"model": torch.nn.Linear(n, 1, bias=False)})
            weights = np.zeros(n, np.float32)
            fut = client.submit(ParameterServer, layout.to_dict(), weights, {"model": SGD(lr=0.01, momentum=0.9)},
                                Downpour(), None, actor=True, workers=[server], key=f"bench-ps-{n}")
            ps = fut.result()
            out[n] = client.submit(_psdist_task, ps, n, reps, workers=[caller], pure=False).result()
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
    """
    import pickle

    import torch

    from psdist.core.protocol import Push
    from psdist.core.server import ServerState
    from psdist.optim import SGD
    from psdist.replica import layout_of
    from psdist.rules import Downpour

    layout = layout_of({"model": torch.nn.Linear(n, 1, bias=False)})
    state = ServerState(layout, np.zeros(n, np.float32), {"model": SGD(lr=0.01, momentum=0.9)}, Downpour())
    grad = np.full(n, 1e-6, np.float32)

    def push() -> Any:
        return state.push(Push("bench", state.version, grad, 128, 0.5), True)

    reply = push()

    def roundtrip() -> None:
        for obj in (Push("bench", state.version, grad, 128, 0.5), reply):
            bufs: list[Any] = []
            data = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
            pickle.loads(data, buffers=[b.raw() for b in bufs])

    return {"server_push_s": _median_s(push, reps), "pickle_s": _median_s(roundtrip, reps)}


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


def main(argv: list[str] | None = None) -> int:
    spec = common.parse(argv)
    common.ensure_path()
    sizes, reps = [int(s) for s in spec["sizes"]], int(spec["reps"])
    rows: dict[str, Any] = {}
    out = common.Output(spec, "ps_micro")
    parts: dict[str, dict[int, dict[str, float]]] = {}
    for label, fn in (("memcpy", lambda: {n: memcpy(n, reps) for n in sizes}),
                      ("psdist", lambda: psdist_calls(sizes, reps)),
                      ("torch_rpc", lambda: rpc_calls(sizes, reps, os.path.dirname(spec["out"]))),
                      ("breakdown", lambda: {n: psdist_breakdown(n, reps) for n in sizes})):
        try:
            parts[label] = fn()
        except Exception as exc:
            out.error(label, exc)
            parts[label] = {}
    for n in sizes:
        mb = 4 * n
        m, p, r = parts["memcpy"].get(n, {}), parts["psdist"].get(n, {}), parts["torch_rpc"].get(n, {})
        b = parts["breakdown"].get(n, {})
        row = {"status": "ok", "params": n, "bytes": mb}
        for key, val, moved in (("memcpy_copy", m.get("copy_s"), mb), ("memcpy_round_trip", m.get("round_trip_s"), 2 * mb),
                                ("psdist_pull", p.get("pull_s"), mb), ("psdist_push_pull", p.get("push_pull_s"), 2 * mb),
                                ("psdist_push_only", p.get("push_only_s"), mb),
                                ("rpc_fetch", r.get("fetch_s"), mb), ("rpc_echo", r.get("echo_s"), 2 * mb)):
            row[f"{key}_ms"] = None if val is None else 1000 * val
            row[f"{key}_gb_s"] = None if not val else moved / val / 1e9
        for key in ("server_push_s", "pickle_s"):
            row[f"psdist_{key[:-2]}_ms"] = None if key not in b else 1000 * b[key]
        if p.get("push_pull_s") and b:  # the rest of a push-with-reply: Dask's transport
            row["psdist_transport_ms"] = 1000 * max(0.0, p["push_pull_s"] - b["server_push_s"] - b["pickle_s"])
        if p.get("push_pull_s") and r.get("echo_s"):
            row["psdist_over_rpc"] = p["push_pull_s"] / r["echo_s"]
        rows[str(n)] = row
        out.add(str(n), row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
