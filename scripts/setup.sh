#!/usr/bin/env bash
# Create .venv (once) and install psdist with the given extras. Idempotent and quick when done.
#   bash scripts/setup.sh test
# PyTorch: if the venv has no torch yet, install PSDIST_TORCH (default torch==2.13.0, which these
# machines serve as a CPU build from local disk) *before* psdist, so that pip never resolves
# psdist's torch range to a multi-GB CUDA build. Bring your own torch by installing it first.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
. .venv/bin/activate
stamp=".venv/.psdist-setup-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -c "import torch" 2>/dev/null || python -m pip install -q "${PSDIST_TORCH:-torch==2.13.0}"
  python -m pip install -q -e ".${extras:+[$extras]}"
  # the benchmark suite's optional contenders (ray, mpi4py; tests/test_bench_suite.py runs them when
  # present): mpi4py builds against Open MPI (.ci/run installs it), so a machine without it still
  # sets up and those rows say "skipped"
  if [ "$extras" = test ]; then
    python -m pip install -q -e ".[bench]" || echo "setup: bench extra (ray, mpi4py) not installed; the suite skips those contenders"
  fi
  touch "$stamp"
fi
