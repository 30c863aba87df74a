#!/usr/bin/env bash
# The device check (issue 16) as ONE command on a lent GPU machine (kind nvidia-h200), run from the
# repository root THERE. Its python3 (3.12, torch 2.11 cu130) lacks Dask, Zarr, Bokeh & co. and
# nothing can be fetched there, so their wheels travel in the git-ignored folder .whl/.
#
# Before the session, here (PyPI reachable; checks that repo + wheels fit the 64 MiB limit):
#   bash scripts/device_wheels.sh
# Then the device tool's call, exactly:
#   run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=570)
# (bench_device keeps to its 450 s budget; pip install and start-up take ~30 s; the rest is slack.)
# After it, here: copy the result into the repo's results, where the suite's report finds it
#   cp <files_at>/bench_device.json benchmarks/results/device-$(date +%F)-h200.json
#   cp <files_at>/bench_device.md   benchmarks/results/device-$(date +%F)-h200.md
# (<files_at> is the folder the run's reply names; then call give_back unless rerunning at once.)
#
# What it does: installs .whl/*.whl into /tmp/site (no index, no deps), PYTHONPATH=/tmp/site:$PWD
# (psdist as source from the checkout), prints the versions (python, torch, CUDA, nvidia-smi -L,
# psdist's dependencies) into $OUT/versions.txt, fails early if psdist, Dask or Zarr do not import
# or torch sees no GPU, then runs `python3 benchmarks/bench_device.py "$@"` with its output teed
# into $OUT/bench_device.log and its JSON + Markdown written to $OUT/bench_device.{json,md}
# (4 files come back). Exit status: 0 when the check completed with no run in error or timeout;
# 1 when bench_device failed, did not complete or a run failed (the files still come back);
# 2 no wheels; 3 install failed; 4 import/GPU preflight failed.
#
# Off the GPU machine (a smoke test of this script): OUT=/tmp/out DEVICE_CHECK_NO_GPU=1 \
#   bash benchmarks/device_check.sh --quick --parts gpu,cpu --gpu-on-cpu
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-$(mktemp -d /tmp/device-check-XXXXXX)}"
export OUT
mkdir -p "$OUT"
SITE="${DEVICE_CHECK_SITE:-/tmp/site}"
PY="${PYTHON:-python3}"
t0=$SECONDS

shopt -s nullglob
wheels=(.whl/*.whl)
[ ${#wheels[@]} -gt 0 ] || { echo "device_check: no wheels in .whl/ (run scripts/device_wheels.sh here and carry [\".whl\"])" >&2; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
  || { echo "device_check: pip install of .whl/*.whl failed" >&2; exit 3; }
export PYTHONPATH="$SITE:$PWD"
echo "device_check: ${#wheels[@]} wheels installed into $SITE in $((SECONDS - t0)) s"

{
  echo "date: $(date -Is)  host: $(hostname)  cores: $(nproc)"
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L 2>&1; else echo "nvidia-smi: not on the PATH"; fi
  "$PY" - <<'EOF'
import importlib.metadata as md, sys
print("python", sys.version.replace("\n", " "), "at", sys.executable)
try:
    import torch
    cuda = torch.cuda.is_available()
    print("torch", torch.__version__, "cuda build", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
          "cuda available", cuda, "|", torch.cuda.get_device_name(0) if cuda else "no GPU")
except Exception as e:  # the preflight below fails on it
    print("torch: import failed:", repr(e))
for name in ("numpy", "dask", "distributed", "zarr", "numcodecs", "google-crc32c", "donfig", "bokeh", "tornado",
             "tblib", "zict", "partd", "locket", "xyzservices", "cloudpickle", "msgpack", "psutil", "toolz", "click",
             "fsspec", "jinja2", "sortedcontainers", "pyyaml", "packaging", "typing_extensions", "pandas", "tqdm",
             "safetensors"):
    try:
        print(f"  {name} {md.version(name)}  {md.distribution(name).locate_file('')}")
    except md.PackageNotFoundError:
        print(f"  {name}: NOT INSTALLED")
EOF
} 2>&1 | tee "$OUT/versions.txt"

# requirements of the carried wheels that the image does not meet (a warning: the imports decide)
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/versions.txt"
import importlib.metadata as md, os, pathlib
from packaging.requirements import Requirement
site = pathlib.Path(os.environ["PYTHONPATH"].split(":")[0])
for dist_info in sorted(site.glob("*.dist-info")):
    d = md.Distribution.at(dist_info)
    for r in map(Requirement, d.requires or []):
        if r.marker and not r.marker.evaluate({"extra": ""}):
            continue
        try:
            v = md.version(r.name)
        except md.PackageNotFoundError:
            print(f"warning: {d.metadata['Name']} needs {r}: not installed")
            continue
        if r.specifier and not r.specifier.contains(v, prereleases=True):
            print(f"warning: {d.metadata['Name']} needs {r}: found {v}")
EOF

echo "device_check: preflight (imports, GPU)"
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/versions.txt"
import os, sys
import dask, dask.array, distributed, zarr, numcodecs, bokeh, tornado
import torch
import psdist, psdist.hep.models, psdist.dashboard
psdist.Trainer
print("preflight: psdist, Dask, Zarr, Bokeh import from", psdist.__file__)
if not torch.cuda.is_available() and not os.environ.get("DEVICE_CHECK_NO_GPU"):
    sys.exit("preflight: torch.cuda.is_available() is False (set DEVICE_CHECK_NO_GPU=1 to go on without a GPU)")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "device_check: preflight failed (see above)" >&2; exit 4; }

echo "device_check: python3 benchmarks/bench_device.py $* (after $((SECONDS - t0)) s)"
"$PY" benchmarks/bench_device.py --out "$OUT/bench_device.json" "$@" 2>&1 | tee "$OUT/bench_device.log"
rc=${PIPESTATUS[0]}
echo "device_check: bench_device exited $rc after $((SECONDS - t0)) s; files in $OUT:"
ls -l "$OUT"

# verdict from the JSON: complete, and no run in error or timeout
"$PY" - "$OUT/bench_device.json" "$rc" <<'EOF'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    doc = json.load(open(path))
except (OSError, ValueError) as e:
    sys.exit(f"device_check: FAILED, no readable {path} ({e}); bench_device exit status {rc}")
bad = []
def walk(x, where):
    if isinstance(x, dict):
        if x.get("status") in ("error", "timeout"):
            bad.append(f"{where}: {x['status']} ({x.get('reason')})")
        for k, v in x.items():
            walk(v, f"{where}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            walk(v, f"{where}[{i}]")
walk({k: doc.get(k) for k in ("gpu", "cpu")}, "")
problems = ([f"bench_device exit status {rc}"] if rc else []) + ([] if doc.get("complete") else ["not complete"]) + bad
print(f"device_check: gpu {doc['gpu'].get('status')}, cpu {doc['cpu'].get('status')}, wall {doc.get('wall_s') or 0:.0f} s")
if problems:
    sys.exit("device_check: FAILED: " + "; ".join(problems))
print("device_check: OK")
EOF
