"""The server-step benchmark at tiny sizes: a well-formed table and JSON, never a timing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = (1000, 20000)
OPTIMIZERS = ("sgd-momentum", "adam")
PATHS = ("numpy", "torch")
MEASURES = ("step", "push", "push+pull")
BUFFERS = ("reused", "fresh")


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_bench_server_step_tiny_writes_every_measure(tmp_path):
    out = tmp_path / "server-step.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_server_step.py"),
                           "--sizes", *map(str, SIZES), "--reps", "3", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == "server_step" and data["sizes"] == list(SIZES) and data["threads"] == 1

    rows = data["results"]
    keys = [(r["params"], r["optimizer"], r["path"], r["measure"], r["buffer"]) for r in rows]
    want = {(n, o, p, m, b) for n in SIZES for o in OPTIMIZERS for p in PATHS for m in MEASURES for b in BUFFERS}
    assert len(keys) == len(set(keys)) and set(keys) == want
    for r in rows:
        assert r["reps"] == 3
        assert all(_positive(r[k]) for k in ("ms", "ms_min", "ms_max"))
        assert r["ms_min"] <= r["ms"] <= r["ms_max"]
    ms = dict(zip(keys, (r["ms"] for r in rows), strict=True))

    memcpy = {c["params"]: c for c in data["memcpy"]}
    assert set(memcpy) == set(SIZES)
    for n, c in memcpy.items():
        assert c["bytes"] == 4 * n and _positive(c["ms"]) and _positive(c["gb_per_s"])
        assert math.isclose(c["gb_per_s"], 4 * n / (c["ms"] * 1e-3) / 1e9, rel_tol=1e-9)

    ratios = {(r["params"], r["optimizer"], r["buffer"]): r for r in data["ratios"]}
    assert set(ratios) == {(n, o, b) for n in SIZES for o in OPTIMIZERS for b in BUFFERS}
    for (n, o, b), r in ratios.items():
        for m in MEASURES:
            assert math.isclose(r[f"{m}_speedup"], ms[(n, o, "numpy", m, b)] / ms[(n, o, "torch", m, b)],
                                rel_tol=1e-9)
            for p in PATHS:
                assert math.isclose(r[f"{p}_{m}_over_memcpy"], ms[(n, o, p, m, b)] / memcpy[n]["ms"], rel_tol=1e-9)

    verdicts = {(v["params"], v["optimizer"]): v for v in data["verdicts"]}
    assert set(verdicts) == {(n, o) for n in SIZES for o in OPTIMIZERS}
    for (n, o), v in verdicts.items():
        assert not v["speedup_applies"]  # the speed-up target is at 4e6 and 1.6e7
        for b in BUFFERS:
            assert v[f"speedup_{b}"] == ratios[(n, o, b)]["step_speedup"] and v[f"speedup_pass_{b}"] is None
            assert v[f"memcpy_pass_{b}"] == (ratios[(n, o, b)]["torch_step_over_memcpy"] <= 3.0)
        assert v["line"] in proc.stdout  # printed as recorded

    for chk in data["checks"]:  # both paths applied the same updates: same weights
        a, b = chk["versions"]
        assert a == b > 0
        assert chk["max_weight_diff"] <= 1e-5 + 1e-3 * chk["max_weight"]
    lines = proc.stdout.splitlines()
    for label in ("1e3", "2e4"):  # the table: a memcpy row and 12 measured rows per size
        rows_of = [line for line in lines if line.split()[:1] == [label] and line.split()[1] in ("memcpy", *OPTIMIZERS)]
        assert len(rows_of) == 1 + len(OPTIMIZERS) * len(BUFFERS) * len(MEASURES)
    assert sum(line.startswith("verdict") for line in lines) == len(SIZES) * len(OPTIMIZERS)
