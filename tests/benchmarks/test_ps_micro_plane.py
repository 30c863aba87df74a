"""The PS microbenchmark per backend (actor, shm, tcp, tcp+bf16, tcp+tls) at a tiny size: well-formed rows, not timings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.suite import report

ROOT = Path(__file__).resolve().parents[2]
PLANE = ("shm", "tcp", "tcp+bf16", "tcp+tls")


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.mark.slow
def test_ps_micro_reports_every_backend(tmp_path):
    spec = tmp_path / "spec.json"
    out = tmp_path / "ps_micro.json"
    spec.write_text(json.dumps({"sizes": [1000], "reps": 3, "seed": 0, "out": str(out)}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suite.ps_micro", "--spec", str(spec)],
                          capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"1000"}, rows  # no part failed (a failed part adds an error row of its name)
    row = rows["1000"]
    assert row["status"] == "ok"
    for key in ("memcpy_copy_ms", "psdist_pull_ms", "psdist_push_pull_ms", "psdist_push_only_ms", "rpc_fetch_ms",
                "rpc_echo_ms", "psdist_over_rpc"):  # the keys from before the data plane stay
        assert _positive(row[key]), key
    assert set(row["plane"]) == set(PLANE)
    assert set(row["push_pull_over_rpc_echo"]) == {"actor", *PLANE}
    assert row["push_pull_over_rpc_echo"]["actor"] == row["psdist_over_rpc"]
    for backend, entry in row["plane"].items():
        assert entry["status"] in ("ok", "skipped"), (backend, entry)
        if entry["status"] == "skipped":  # only a TLS cluster that cannot start may skip, and says why
            assert backend == "tcp+tls" and isinstance(entry["reason"], str) and entry["reason"], entry
            assert row["push_pull_over_rpc_echo"][backend] is None
            continue
        for key in ("pull_ms", "push_pull_ms", "push_only_ms", "pull_gb_s", "push_pull_gb_s",
                    "push_pull_over_rpc_echo"):
            assert _positive(entry[key]), (backend, key)
        assert row["push_pull_over_rpc_echo"][backend] == entry["push_pull_over_rpc_echo"]
    md = report.ps_micro({"ps_micro": rows})
    assert "psdist per backend" in md
    for backend in ("actor", *PLANE):
        assert f"| {backend} |" in md


def test_report_ps_micro_tables():
    old = {"status": "ok", "memcpy_copy_ms": 0.3, "memcpy_copy_gb_s": 13.0, "psdist_push_pull_ms": 6.0,
           "rpc_echo_ms": 3.0, "psdist_over_rpc": 2.0}
    md = report.ps_micro({"ps_micro": {"1000000": old}})
    assert "psdist push+pull" in md and "per backend" not in md  # a result from before the data plane
    new = {**old, "psdist_pull_ms": 2.0, "psdist_pull_gb_s": 2.0, "plane": {
        "shm": {"status": "ok", "pull_ms": 0.4, "pull_gb_s": 10.0, "push_pull_ms": 1.5, "push_pull_gb_s": 5.0,
                "push_only_ms": 1.2, "push_only_gb_s": 3.0, "push_pull_over_rpc_echo": 0.5},
        "tcp+tls": {"status": "skipped", "reason": "the TLS cluster did not start: no cryptography"}}}
    md = report.ps_micro({"ps_micro": {"1000000": new, "error": {"status": "error", "reason": "boom"}}})
    lines = md.splitlines()
    assert any(line.startswith("| 1e+06 | actor | 2.000 (2.00) | 6.000 (—) |") and "| 2.00 |" in line for line in lines)
    assert any(line.startswith("|  | shm | 0.400 (10.00) | 1.500 (5.00) | 1.200 (3.00) | 0.50 |") for line in lines)
    assert any("| tcp+tls | skipped: the TLS cluster did not start: no cryptography |" in line for line in lines)
    assert "error: boom" in md
