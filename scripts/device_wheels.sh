#!/usr/bin/env bash
# Fetch, HERE (PyPI reachable), the wheels that the lent GPU machine (kind nvidia-h200) lacks for
# psdist and benchmarks/bench_device.py, into the git-ignored folder .whl/ that the device call
# carries (carry [".whl"]); benchmarks/device_check.sh installs them there. Run once before a GPU
# session, from anywhere:
#
#   bash scripts/device_wheels.sh
#
# What it does: walks the dependency closure of psdist's [project] dependencies (pyproject.toml)
# for CPython 3.12 on manylinux x86_64 (the H200 image's python3 is 3.12.3; markers are evaluated
# for it), minus the packages the image already has (IMAGE_HAS below); downloads each missing one
# with `pip download --no-deps --only-binary=:all:`, pinned to the version in this checkout's
# .venv (`.venv/bin/pip freeze`) where a cp312/py3 wheel of it exists (else the newest wheel that
# satisfies the requirement, with a warning); reads every wheel's METADATA (Requires-Dist) for
# the next round. One version of each package (two stop the install there). Fails if a required
# package is neither in the image nor downloadable. Prints the list, the total size and what the
# device call would carry (repo + wheels; the limit is 64 MiB). Adds /.whl/ to .git/info/exclude.
#
# Environment: PY (default .venv/bin/python: needs pip and packaging), WHL_DIR (default .whl).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
WHL_DIR="${WHL_DIR:-.whl}"
[ -x "$PY" ] || { echo "device_wheels: $PY not found (run scripts/setup.sh first, or set PY)" >&2; exit 2; }

# The H200 image's Python packages, copied from /work/.library/device/KINDS.md, section "Python
# packages already there" (nvidia-h200, image 'cuda', as read on a machine on 2026-11-17; python3
# there is 3.12.3 at /opt/torch/.venv/bin/python3, torch 2.11.0+cu130, numpy 2.5.2). Update it
# from that file when the image changes. None of these travel.
IMAGE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio
h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson
six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

IMAGE_HAS="$IMAGE_HAS" STAGE="$stage" "$PY" - <<'EOF'
import os, re, subprocess, sys, tomllib, zipfile
from email.parser import Parser
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon, parse_wheel_filename

stage = os.environ["STAGE"]
image = {canon(n) for n in os.environ["IMAGE_HAS"].split()}
# the H200 image's interpreter, for evaluating environment markers
env = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
       "implementation_version": "3.12.3", "platform_python_implementation": "CPython",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}
platforms = [f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)] + ["manylinux2014_x86_64",
             "manylinux2010_x86_64", "manylinux1_x86_64"]

freeze = {}
for line in subprocess.run([sys.executable, "-m", "pip", "freeze"], check=True, capture_output=True,
                           text=True).stdout.splitlines():
    m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
    if m:
        freeze[canon(m[1])] = m[2]

def applies(req, extras):
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in ({""} | set(extras)))

def download(spec):
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3",
           "--abi", "none", "-d", stage, spec]
    for p in platforms:
        cmd += ["--platform", p]
    return subprocess.run(cmd, capture_output=True, text=True)

with open("pyproject.toml", "rb") as f:
    roots = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]

queue = [(r, "psdist") for r in roots]
got = {}          # name -> wheel filename
extras_done = {}  # name -> extras whose requirements were queued
skipped, warnings = {}, []
while queue:
    req, parent = queue.pop(0)
    name = canon(req.name)
    if name in image:
        skipped.setdefault(name, set()).add(parent)
        if req.extras:
            warnings.append(f"{parent} wants {req} from the image: its extras {sorted(req.extras)} are not checked")
        continue
    if name not in got:
        pin = freeze.get(name)
        res = download(f"{req.name}=={pin}") if pin else None
        if res is None or res.returncode != 0:
            why = f"no cp312 wheel of the .venv's {pin}" if pin else "not in the .venv"
            res = download(str(Requirement(f"{req.name}{req.specifier}")))
            if res.returncode != 0:
                sys.exit(f"device_wheels: cannot get a cp312 manylinux wheel of {req} (needed by {parent}):\n"
                         + res.stderr[-2000:])
            warnings.append(f"{req.name}: {why}; took the newest wheel matching '{req.specifier or 'any'}'")
        files = [f for f in os.listdir(stage) if f.endswith(".whl") and canon(parse_wheel_filename(f)[0]) == name]
        if len(files) != 1:
            sys.exit(f"device_wheels: expected one wheel of {name}, found {files}")
        got[name] = files[0]
        extras_done[name] = None
    new = set(req.extras) - (extras_done[name] or set())
    if extras_done[name] is not None and not new:
        continue
    extras_done[name] = (extras_done[name] or set()) | set(req.extras)
    with zipfile.ZipFile(os.path.join(stage, got[name])) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        msg = Parser().parsestr(z.read(meta).decode())
    for line in msg.get_all("Requires-Dist") or []:
        dep = Requirement(line)
        if applies(dep, extras_done[name]):
            queue.append((dep, name))

total = 0
print(f"{'wheel':<78} {'KiB':>8}  .venv pin")
for name in sorted(got):
    f = got[name]
    size = os.path.getsize(os.path.join(stage, f))
    total += size
    ver = str(parse_wheel_filename(f)[1])
    pin = freeze.get(name, "-")
    print(f"{f:<78} {size // 1024:>8}  {pin}{'' if pin == ver else '  (differs!)'}")
print(f"{len(got)} wheels, {total / 2**20:.1f} MiB")
print("from the image (not carried):", ", ".join(f"{n} (for {', '.join(sorted(p))})" for n, p in sorted(skipped.items())))
for w in warnings:
    print("warning:", w)
EOF

rm -rf "$WHL_DIR"
mkdir -p "$WHL_DIR"
mv "$stage"/*.whl "$WHL_DIR"/

# what one device call sends: tracked + untracked-not-ignored files, plus the carried .whl
repo_b=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
whl_b=$(du -sb "$WHL_DIR" | cut -f1)
awk -v r="$repo_b" -v w="$whl_b" 'BEGIN {
  t = r + w
  printf "travels: repo %.1f MiB + %s %.1f MiB = %.1f MiB of 64 MiB\n", r / 2^20, "'"$WHL_DIR"'", w / 2^20, t / 2^20
  if (t > 60 * 2^20) { print "device_wheels: too close to the 64 MiB limit" > "/dev/stderr"; exit 1 }
}'
