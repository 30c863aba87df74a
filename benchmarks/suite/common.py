"""What every contender process shares: its spec, the training curve, evaluation, memory, output.

    python -m benchmarks.suite.c_plain --spec spec.json     # how the driver calls a contender

A contender process gets a JSON spec (workloads and their Zarr stores, epochs, batch size, seed,
device, workers/threads) and writes one JSON result file, rewritten after every workload so a
timeout still leaves what was measured. Each row follows one schema (:meth:`Curve.row`):
samples/s of the timed epochs (epoch 1 is warm-up), the validation metric after every epoch,
time and updates to the target metric, the final metric and the peak memory of each process.

Evaluation happens every epoch (= every ``train rows`` samples, the same interval for every
contender, because psdist's trainer validates at epoch ends) and is never counted as training
time; time to target is the training time accumulated up to that evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- spec and output
def parse(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="one contender of the benchmark suite (called by run_suite.py)")
    p.add_argument("--spec", required=True, help="JSON spec written by the driver")
    a = p.parse_args(argv)
    spec = json.loads(Path(a.spec).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return spec


def finite(obj: Any) -> Any:
    """NaN/inf -> None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return finite(obj.item())
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomic write (the driver may read the file after killing a timed-out contender)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(finite(obj), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


class Output:
    """The result file of one contender process: ``{"rows": {row key: row}}``."""

    def __init__(self, spec: dict[str, Any], contender: str) -> None:
        self.path = spec["out"]
        self.doc: dict[str, Any] = {"contender": contender, "rows": {}}

    def add(self, key: str, row: dict[str, Any]) -> None:
        self.doc["rows"][key] = row
        write_json(self.path, self.doc)

    def error(self, key: str, exc: BaseException) -> None:
        logger.exception("%s failed", key)
        self.add(key, {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:500]})


# ---------------------------------------------------------------------------- memory
def reset_peak() -> None:
    """Reset this process's peak RSS (Linux clear_refs "5"), so a peak is per workload."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux / not allowed: the peak then covers the whole process life
        pass


def peak_mb() -> float:
    """Peak resident memory of this process since :func:`reset_peak` (MiB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- torch helpers
def setup_torch(threads: int, seed: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def device_of(spec: dict[str, Any]) -> Any:
    import torch

    return torch.device(spec.get("device", "cpu"))


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(name: str, seed: int, device: Any | None = None) -> Any:
    """The workload's model with the suite's seeded initial weights (the same for everyone)."""
    import torch

    from benchmarks.suite.workloads import WORKLOADS

    torch.manual_seed(seed)
    model = WORKLOADS[name].model()
    return model.to(device) if device is not None else model


def n_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def evaluate(model: Any, name: str, xv: Any, yv: np.ndarray, batch: int = 512) -> float:
    """The workload metric of ``model`` on the validation rows (``xv`` a tensor on the device)."""
    import torch

    from benchmarks.suite.workloads import metric

    was = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for lo in range(0, len(xv), batch):
            outs.append(model(xv[lo : lo + batch]).float().cpu().numpy())
    model.train(was)
    return metric(name, yv, np.concatenate(outs))


def set_flat(model: Any, flat: Any) -> None:
    """Copy a flat float32 vector (numpy or torch, any device) into the model's parameters, in order."""
    import torch

    t = flat if isinstance(flat, torch.Tensor) else torch.from_numpy(np.asarray(flat))
    off = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(t[off : off + n].view_as(p))
            off += n


def grads_vector(model: Any) -> Any:
    """All parameter gradients as one flat float32 CPU tensor (what PS contenders send)."""
    import torch

    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).cpu()
                      for p in model.parameters()])


def batch_bounds(n: int, batch: int) -> list[tuple[int, int]]:
    from psdist.replica.loop import batch_bounds as bb

    return bb(n, batch)


# ---------------------------------------------------------------------------- the curve
class Curve:
    """Per-epoch records of one training, and the row every contender reports.

    ``add`` takes the epoch's training seconds (evaluation excluded), samples trained,
    cumulative updates (optimizer steps or applied pushes) and the validation metric after it.
    """

    def __init__(self, name: str, target: float, warmup: int = 1) -> None:
        self.name, self.target, self.warmup = name, target, warmup
        self.epochs: list[dict[str, Any]] = []

    def add(self, samples: int, train_s: float, updates: int, val_metric: float, **extra: Any) -> None:
        cum = train_s + (self.epochs[-1]["cum_train_s"] if self.epochs else 0.0)
        self.epochs.append({"epoch": len(self.epochs) + 1, "samples": int(samples), "train_s": train_s,
                            "cum_train_s": cum, "updates": int(updates), "val_metric": float(val_metric),
                            **extra})

    def row(self, peak_per_process_mb: list[float], **extra: Any) -> dict[str, Any]:
        timed = self.epochs[self.warmup :] or self.epochs
        samples = sum(e["samples"] for e in timed)
        seconds = sum(e["train_s"] for e in timed)
        hit = next((e for e in self.epochs if e["val_metric"] >= self.target), None)
        metrics = [e["val_metric"] for e in self.epochs]
        return {
            "status": "ok",
            "samples_per_s": samples / seconds if seconds > 0 else None,
            "timed_samples": samples,
            "timed_s": seconds,
            "final_metric": metrics[-1] if metrics else None,
            "best_metric": max(metrics) if metrics else None,
            "target": self.target,
            "time_to_target_s": hit["cum_train_s"] if hit else None,
            "updates_to_target": hit["updates"] if hit else None,
            "updates": self.epochs[-1]["updates"] if self.epochs else 0,
            "peak_rss_mb": max(peak_per_process_mb) if peak_per_process_mb else None,
            "peak_rss_mb_per_process": [round(v, 1) for v in peak_per_process_mb],
            "processes": len(peak_per_process_mb),
            "epochs": self.epochs,
            **extra,
        }


def run_workloads(spec: dict[str, Any], contender: str, one: Callable[[str, dict[str, Any]], dict[str, Any]],
                  key: Callable[[str], str] | None = None) -> int:
    """Run ``one(workload, info)`` for every workload of the spec; errors become error rows."""
    out = Output(spec, contender)
    for name, info in spec["workloads"].items():
        k = key(name) if key else f"{contender}/{name}"
        t0 = time.perf_counter()
        try:
            row = one(name, info)
            row["process_s"] = time.perf_counter() - t0
            out.add(k, row)
        except Exception as exc:
            out.error(k, exc)
    return 0


def ensure_path() -> None:
    """Make ``benchmarks.suite`` importable in spawned processes (mp.spawn, mpirun, Ray)."""
    root = str(ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *parts])
