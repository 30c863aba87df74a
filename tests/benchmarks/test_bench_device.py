"""The device check script (benchmarks/bench_device.py): well-formed results and report, not timings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.suite import report

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_device.py"


def _run(tmp_path: Path, *args: str, timeout: float = 280) -> dict:
    out = tmp_path / "device-check.json"
    env = {**{k: v for k, v in os.environ.items() if k != "OUT"}, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", *args, "--out", str(out)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _check_machine(doc: dict) -> None:
    assert doc["kind"] == "device-check" and doc["schema"] == 1 and doc["quick"] is True
    assert doc["complete"] is True and _positive(doc["wall_s"])
    m = doc["machine"]
    assert m["cores"] == os.cpu_count() and isinstance(m["torch"], str) and isinstance(m["cuda_available"], bool)
    assert set(m["api"]) == {"devices", "precision"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU part runs where CUDA is")
def test_gpu_part_is_skipped_with_a_reason_without_cuda(tmp_path):
    doc = _run(tmp_path, "--parts", "gpu", timeout=120)
    _check_machine(doc)
    assert doc["gpu"]["status"] == "skipped" and "cuda" in doc["gpu"]["reason"].lower()
    assert doc["cpu"]["status"] == "skipped"  # not asked for
    md = (tmp_path / "device-check.md").read_text()
    assert "skipped: torch.cuda.is_available() is False" in md


@pytest.mark.slow
def test_quick_run_writes_json_and_the_suite_report_renders_it(tmp_path):
    """Both parts in one quick run (one process start); the GPU part's code on CPU (--gpu-on-cpu):
    its plain loop under autocast and psdist with precision=."""
    doc = _run(tmp_path, "--parts", "cpu,gpu", "--gpu-on-cpu", "--workloads", "wide_mlp",
               "--precisions", "bf16-mixed", "--workers", "1,64")  # 64: skipped with its reason
    _check_gpu_part_on_cpu(doc)
    _check_machine(doc)
    cpu = doc["cpu"]
    assert cpu["status"] == "ok" and cpu["workload"] == "wide_mlp"
    assert cpu["plain"]["status"] == "ok" and _positive(cpu["plain"]["samples_per_s"])
    assert cpu["plain"]["threads"] == 1
    cores = os.cpu_count() or 1
    ran = [r["workers"] for r in cpu["rows"]]
    assert ran == [n for n in (1, 64) if n <= max(1, cores)]  # --quick: up to the core count
    assert [s["workers"] for s in cpu["skipped_workers"]] == [n for n in (1, 64) if n not in ran]
    assert all(s["reason"] for s in cpu["skipped_workers"])
    for r in cpu["rows"]:
        assert r["status"] == "ok", r.get("reason")
        assert _positive(r["samples_per_s"]) and 0.0 <= r["val_accuracy"] <= 1.0
        assert r["training_workers"] == r["workers"] and r["worker_devices"] == ["cpu"]
        assert math.isclose(r["efficiency"], r["speedup"] / r["workers"])
        assert r["epochs"] and r["trainer_kwargs"]["workers"] == r["workers"]
    # the suite's report picks the newest device check of a folder and renders both tables
    older = {**doc, "date": "2000-01-01T00:00:00", "host": "older-host"}
    (tmp_path / "device-2000-01-01-old.json").write_text(json.dumps(older))
    (tmp_path / "device-broken.json").write_text("{not json")
    path, found = report.latest_device_check(tmp_path)
    assert path.name == "device-check.json" and found["host"] == doc["host"]
    md = report.markdown(_suite_doc(), [], device_dir=tmp_path)
    assert "**Device check — " in md and "CPU scaling: wide_mlp" in md
    assert "| psdist 1 worker(s) |" in md and "| plain 1 thread |" in md


def _check_gpu_part_on_cpu(doc: dict) -> None:
    gpu = doc["gpu"]
    assert gpu["status"] == "ok" and gpu["device"] == "cpu" and gpu["target_ratio"] == 0.9
    (row,) = gpu["rows"]
    assert (row["workload"], row["precision"]) == ("wide_mlp", "bf16-mixed")
    for run in (row["plain"], row["psdist"]):
        assert run["status"] == "ok", run.get("reason")
        assert _positive(run["samples_per_s"]) and 0.0 <= run["val_accuracy"] <= 1.0
    assert row["psdist"]["trainer_kwargs"]["precision"] == "bf16-mixed"
    assert math.isclose(row["ratio"], row["psdist"]["samples_per_s"] / row["plain"]["samples_per_s"])
    assert row["target_met"] == (row["ratio"] >= 0.9)


def _suite_doc() -> dict:
    """The smallest suite document report.markdown renders (no rows)."""
    machine = {"cpu": "cpu", "cores": 2, "memory_gib": 1.0, "platform": "p", "loadavg_start": [0], "loadavg_end": [0]}
    settings = {"device": "cpu", "size": "tiny", "epochs": 1, "warmup": 0, "batch_size": 8, "workers": 2, "seed": 0,
                "all_cores_contender": "torch-2t"}
    return {"date": "d", "host": "h", "machine": machine, "settings": settings, "command": "c", "wall_s": 1.0,
            "workloads": [], "contenders": [], "results": [], "targets": []}


def test_report_renders_gpu_ratios_with_target_marks_and_failures(tmp_path):
    ok = {"status": "ok", "samples_per_s": 1000.0, "val_accuracy": 0.8}
    rows = [{"workload": "jet_cnn", "precision": "32", "plain": ok, "psdist": {**ok, "samples_per_s": 950.0},
             "ratio": 0.95, "target_met": True},
            {"workload": "wide_mlp", "precision": "bf16-mixed", "plain": ok,
             "psdist": {**ok, "samples_per_s": 300.0}, "ratio": 0.3, "target_met": False},
            {"workload": "wide_mlp", "precision": "32", "plain": ok,
             "psdist": {"status": "timeout", "reason": "stopped after 150 s"}, "ratio": None, "target_met": None}]
    doc = {"kind": "device-check", "date": "2026-12-02T00:00:00", "host": "gpu", "wall_s": 300.0, "complete": True,
           "machine": {"gpu": "NVIDIA H200", "cores": 16, "torch": "2.11.0", "torch_cuda": "13.0"},
           "gpu": {"status": "ok", "target_ratio": 0.9, "rows": rows},
           "cpu": {"status": "skipped", "reason": "not asked for (--parts)"}}
    (tmp_path / "device-2026-12-02-gpu.json").write_text(json.dumps(doc))
    md = report.markdown(_suite_doc(), [], device_dir=tmp_path)
    assert "NVIDIA H200" in md
    assert "| jet_cnn | 32 | 1000 | 950 | 0.95 | ✓ | 0.800 | 0.800 |" in md
    assert "| wide_mlp | bf16-mixed | 1000 | 300 | 0.30 | ✗ |" in md
    assert "timeout: stopped after 150 s" in md and "| — |" in md
    assert "skipped: not asked for (--parts)" in md
    assert "Device check" not in report.markdown(_suite_doc(), [], device_dir=None)
    assert "Device check" not in report.markdown(_suite_doc(), [], device_dir=tmp_path / "none")
