"""Benchmarks run at their tiny size as smoke tests: well-formed results, not timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_rules_tiny_writes_table_json_and_plot(tmp_path):
    stem = tmp_path / "rules"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_rules.py"), "--size", "tiny",
                           "--out", str(stem)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(stem.with_suffix(".json").read_text())
    rules = {r["rule"] for r in out["results"]}
    assert rules == {"async (Downpour)", "staleness-aware", "DC-ASGD", "EASGD", "GEM", "SSP(s=2)", "sync"}
    assert {(r["rule"], r["workers"]) for r in out["results"]} == {(n, w) for n in rules for w in (1, 4)}
    for r in out["results"]:
        assert 0.0 <= r["val_accuracy"] <= 1.0
        assert r["curve"] and r["curve"][-1][2] == r["val_accuracy"]
        assert r["applied"] + r["rejected"] > 0
    table = stem.with_suffix(".md").read_text()
    assert table.count("\n| ") == 1 + len(rules)  # one row per rule under the header
    png = stem.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
