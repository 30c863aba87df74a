"""The contenders: what each is, how it is launched, and why it may be skipped.

    python -m benchmarks.suite.contenders          # list them with their availability here

Every contender is a separate process tree started by the driver (:mod:`benchmarks.suite.runner`)
with a JSON spec and a timeout; a contender that cannot run here is a row with a reason,
never a missing row and never a number.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

# Open MPI in a container as root with no network but loopback: shared memory between ranks,
# TCP only on lo for the out-of-band channel, no CMA single copy (needs ptrace rights), and
# yield when idle (3 ranks share 2 cores: a spinning master would steal a worker's core).
MPI_ENV = {
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
    "OMPI_MCA_oob_tcp_if_include": "lo",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_mpi_yield_when_idle": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}

HOROVOD_REASON = (
    "not installable here: Horovod has no wheels (sdist 0.28.1 of 2023); `pip install horovod` builds it "
    "without its PyTorch extension (build isolation hides torch: horovod.torch has no init), and the build "
    "with HOROVOD_WITH_PYTORCH=1 --no-build-isolation was still compiling after 10 minutes on these 2 cores "
    "(benchmarks/results/horovod-install.log); DDP over gloo is the synchronous all-reduce contender instead"
)


@dataclass(frozen=True)
class Contender:
    name: str
    module: str  # benchmarks.suite.<module> run with --spec
    kind: str  # "plain", "ddp", "ray", "rpc", "mpi", "psdist", "horovod"
    label: str
    description: str


def contenders(cores: int, workers: int) -> list[Contender]:
    return [
        Contender("torch-1t", "c_plain", "plain", "PyTorch, 1 thread",
                  "single-process PyTorch, torch.set_num_threads(1)"),
        Contender(f"torch-{cores}t", "c_plain", "plain", f"PyTorch, {cores} threads",
                  f"single-process PyTorch, torch.set_num_threads({cores}) (all cores)"),
        Contender("ddp", "c_ddp", "ddp", f"DDP gloo, {workers} proc",
                  f"DistributedDataParallel over gloo, {workers} processes x 1 thread (mp.spawn)"),
        Contender("ray-ps", "c_ray", "ray", f"Ray actor PS, {workers} workers",
                  "asynchronous Ray parameter-server actor (Ray's PS example pattern)"),
        Contender("rpc-ps", "c_rpc", "rpc", f"torch RPC PS, {workers} trainers",
                  "torch.distributed.rpc parameter server (PyTorch's RPC PS tutorial pattern), async"),
        Contender("mpi-downpour", "c_mpi", "mpi", f"MPI Downpour, {workers} workers",
                  "mpi4py master/worker Downpour (mpi_learn style), Open MPI"),
        Contender("horovod", "", "horovod", "Horovod", "Horovod all-reduce (not run)"),
    ]


def psdist_rows(rules: list[str], workers: int) -> list[Contender]:
    return [Contender(f"psdist-{r}", "c_psdist", "psdist", f"psdist {r}, {workers}x1",
                      f"psdist.Trainer rule={r}, {workers} workers x 1 thread, embedded LocalCluster")
            for r in rules]


def skip_reason(c: Contender, device: str) -> str | None:
    """Why ``c`` cannot run on this machine (None: it can)."""
    if c.kind == "horovod":
        return HOROVOD_REASON
    if c.kind == "ray" and importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install -e '.[bench]'; absent on the offline GPU machine)"
    if c.kind == "mpi":
        if device != "cpu":
            return "the MPI contender trains on CPU only"
        if importlib.util.find_spec("mpi4py") is None:
            return "mpi4py is not installed (apt-get install openmpi-bin libopenmpi-dev; pip install mpi4py)"
        if shutil.which("mpirun") is None:
            return "no mpirun on PATH (apt-get install openmpi-bin)"
    if c.kind in ("rpc", "ddp"):
        import torch.distributed as dist

        if not dist.is_available():
            return "this torch build has no torch.distributed"
        if c.kind == "rpc":
            import torch.distributed.rpc as rpc

            if not rpc.is_available():
                return "this torch build has no torch.distributed.rpc"
    return None


def command(c: Contender, spec_path: str, workers: int) -> list[str]:
    """The command line that runs contender ``c`` (mpirun for MPI)."""
    base = [sys.executable, "-m", f"benchmarks.suite.{c.module}", "--spec", spec_path]
    if c.kind == "mpi":
        mpirun = shutil.which("mpirun") or "mpirun"
        root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        return [mpirun, *root, "--oversubscribe", "-n", str(workers + 1), *base]
    return base


def env_for(c: Contender) -> dict[str, str]:
    return dict(MPI_ENV) if c.kind == "mpi" else {}


def main() -> None:
    cores = os.cpu_count() or 1
    for c in contenders(cores, 2):
        reason: Any = skip_reason(c, "cpu")
        print(f"{c.name:<14} {'skip: ' + reason if reason else 'runs'}")


if __name__ == "__main__":
    main()
