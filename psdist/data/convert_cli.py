"""The ``psdist convert`` subcommand: NumPy, HDF5 and ROOT files to a psdist Zarr dataset.

    psdist convert numpy out.zarr --x x.npy --y y.npy
    psdist convert hdf5 out.zarr a.h5 b.h5 --x jets/features --y jets/label
    psdist convert root out.zarr sig.root:1 bkg.root:0 --tree Events \\
        --jagged part_pt part_eta part_phi --max-particles 30 --flat jet_pt jet_mass --interleave
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_convert_parser", "parse_files"]

CONVERT_HELP = """\
Convert NumPy, HDF5 or ROOT files into a psdist Zarr dataset, a block of --chunk-rows rows at a
time (files larger than memory convert).

The store holds x (features, float32) and y (labels), plus:
  x_<name>          hdf5 with several --x datasets: one array each (and no x)
  x + mask          root --jagged: x is (N, max_particles, n_jagged), zero-padded or truncated;
                    mask (N, max_particles) is True on real particles
  x_flat            root --flat together with --jagged: (N, n_flat)
  <name>_val        the same for --val-files (or --x-val/--y-val)
Without validation inputs, train with data: {val_fraction: 0.1} to hold out chunks spread
over the store; with one file per class add --interleave so every chunk mixes the files.

Files may carry a constant label, FILE:LABEL (sig.root:1 bkg.root:0), instead of --y/--label.
"""


def parse_files(specs: list[str]) -> list[str] | dict[str, float]:
    """``["a.h5", "b.h5"]`` as is; ``["sig.root:1", "bkg.root:0"]`` as ``{path: label}``."""
    from psdist.errors import ConfigError

    labelled: dict[str, float] = {}
    plain = []
    for spec in specs:
        path, sep, value = spec.rpartition(":")
        number = _number(value) if sep and path else None
        if number is None:
            plain.append(spec)
        else:
            labelled[path] = number
    if labelled and plain:
        raise ConfigError(f"files {plain} have no :LABEL but others do: label every file (sig.root:1) or none")
    return labelled or plain


def _number(text: str) -> float | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def _progress(quiet: bool) -> Any:
    if quiet:
        return None
    from tqdm.auto import tqdm

    state: dict[str, Any] = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc="convert", unit="row", unit_scale=True, file=sys.stderr)
        bar = state["bar"]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def _report(path: str) -> None:
    import zarr

    g = zarr.open_group(path, mode="r")
    arrays = ", ".join(f"{k} {tuple(a.shape)} {a.dtype}" for k, a in sorted(g.arrays(), key=lambda ka: ka[0]))
    print(f"wrote {path}: {arrays}")
    inputs = [k for k in sorted(g.array_keys(), key=lambda k: (k != "x", k != "mask", k))
              if not k.endswith("_val") and k != "y"]
    if len(inputs) > 1:  # several inputs: the config that trains on all of them, as the model's arguments
        print(f"train on all of them (in your model's argument order): data: {{path: {path}, "
              f"inputs: [{', '.join(inputs)}], targets: y}}")


def _common(a: argparse.Namespace) -> dict[str, Any]:
    return {"chunk_rows": a.chunk_rows, "compressor": None if a.compressor == "none" else a.compressor,
            "overwrite": a.overwrite, "progress": _progress(a.quiet)}


def _numpy(a: argparse.Namespace) -> int:
    from psdist.data.convert import from_numpy

    from_numpy(a.out, a.x, a.y, a.x_val, a.y_val, npz=a.npz, **_common(a))
    _report(a.out)
    return 0


def _hdf5(a: argparse.Namespace) -> int:
    from psdist.data.convert import from_hdf5

    x = a.x[0] if len(a.x) == 1 else a.x
    x_val = None if a.x_val is None else (a.x_val[0] if len(a.x_val) == 1 else a.x_val)
    val_files = parse_files(a.val_files) if a.val_files else None
    from_hdf5(a.out, parse_files(a.files), x, a.y, x_val, a.y_val, val_files=val_files,
              interleave=a.interleave, **_common(a))
    _report(a.out)
    return 0


def _root(a: argparse.Namespace) -> int:
    from psdist.data.convert import from_root

    val_files = parse_files(a.val_files) if a.val_files else None
    from_root(a.out, parse_files(a.files), a.tree, a.flat, a.jagged, a.max_particles, a.label,
              val_files=val_files, interleave=a.interleave, **_common(a))
    _report(a.out)
    return 0


def add_convert_parser(sub: Any) -> None:
    """Register ``psdist convert {numpy,hdf5,root}`` on the CLI's subparsers."""
    c: argparse.ArgumentParser = sub.add_parser(
        "convert", help="convert NumPy, HDF5 or ROOT files to a psdist Zarr dataset",
        description=CONVERT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = c.add_subparsers(dest="format", required=True)

    def kind(name: str, help: str) -> argparse.ArgumentParser:
        p = kinds.add_parser(name, help=help)
        p.add_argument("out", help="output Zarr directory")
        p.add_argument("--chunk-rows", type=int, default=1024, help="rows per Zarr chunk and per block read")
        p.add_argument("--compressor", default="lz4", help="lz4 (default), zstd, lz4hc, zlib, blosclz or none")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        return p

    n = kind("numpy", "from .npy files (memory-mapped) or an .npz archive")
    n.add_argument("--x", required=True, help=".npy file of features (or a key of --npz)")
    n.add_argument("--y", required=True, help=".npy file of labels (or a key of --npz)")
    n.add_argument("--x-val", help="validation features")
    n.add_argument("--y-val", help="validation labels")
    n.add_argument("--npz", help=".npz archive holding the keys given as --x/--y")
    n.set_defaults(func=_numpy)

    h = kind("hdf5", "from datasets of one or several HDF5 files, concatenated in order")
    h.add_argument("files", nargs="+", metavar="FILE[:LABEL]", help="HDF5 files (FILE:LABEL for a constant label)")
    h.add_argument("--x", nargs="+", required=True, metavar="DATASET",
                   help="feature dataset(s), e.g. jets/features; several are written as x_<name>")
    h.add_argument("--y", metavar="DATASET", help="label dataset, e.g. jets/label")
    h.add_argument("--x-val", nargs="+", metavar="DATASET", help="validation feature dataset(s)")
    h.add_argument("--y-val", metavar="DATASET", help="validation label dataset")
    h.add_argument("--val-files", nargs="+", metavar="FILE[:LABEL]", help="validation files")
    h.add_argument("--interleave", action="store_true", help="mix the files through every chunk")
    h.set_defaults(func=_hdf5)

    r = kind("root", "from branches of a ROOT TTree (uproot)")
    r.add_argument("files", nargs="+", metavar="FILE[:LABEL]", help="ROOT files (FILE:LABEL for a constant label)")
    r.add_argument("--tree", default="Events", help="tree name (default Events)")
    r.add_argument("--flat", nargs="+", default=[], metavar="BRANCH", help="flat branches: one number per event")
    r.add_argument("--jagged", nargs="+", default=[], metavar="BRANCH",
                   help="per-particle branches, padded/truncated to --max-particles")
    r.add_argument("--max-particles", type=int, help="particles kept per event (with --jagged)")
    r.add_argument("--label", metavar="BRANCH", help="label branch (or give FILE:LABEL)")
    r.add_argument("--val-files", nargs="+", metavar="FILE[:LABEL]", help="validation files")
    r.add_argument("--interleave", action="store_true", help="mix the files through every chunk")
    r.set_defaults(func=_root)
