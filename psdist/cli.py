"""The ``psdist`` command line.

    psdist train examples/jet_images.yaml            # train as the config says
    psdist train cfg.yaml --epochs 10 --workers 4    # override a few settings
    psdist train cfg.yaml --save run.ckpt            # checkpoint every epoch and 60 s
    psdist train cfg.yaml --resume run.ckpt          # finish a run after a crash (or --epochs N more)
    psdist train cfg.yaml --resume run.ckpt --override   # ... with the YAML's changed optimizer/rule/batch size
    psdist schema > psdist.schema.json               # the config's JSON Schema, for editors
    psdist generate jet-images data/jets.zarr        # make an offline HEP dataset
    psdist convert root out.zarr sig.root:1 bkg.root:0 --jagged part_pt part_eta --max-particles 30
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import Any

import yaml

from psdist.data.convert_cli import add_convert_parser
from psdist.errors import ConfigError, PsdistError
from psdist.run.epoch import FAULT_FIELDS
from psdist.settings import json_schema, mismatch, restored_settings, yaml_keys

__all__ = ["main"]

logger = logging.getLogger("psdist")

TRAIN_HELP = """\
Train a PyTorch model with psdist, as described by a YAML config file.

The config names the model factory as module:function, the Zarr dataset, the server optimizer
and the cluster size. Without --scheduler, psdist starts a LocalCluster on this machine (one
worker per --workers, plus one for the parameter server) and closes it at the end.

Minimal config:
  model: psdist.hep.models:jet_cnn       # function returning a torch.nn.Module
  loss: cross_entropy                    # torch.nn.functional name or module:function
  data: {path: data/jets.zarr}           # a Zarr group with x, y (and x_val, y_val)
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
  epochs: 5
  workers: 2
Make a dataset first, e.g.: psdist generate jet-images data/jets.zarr

Every key of the config: psdist schema (a JSON Schema, also docs/psdist-config.schema.json).

With --resume, the training settings a checkpoint stores
  {restored}
are taken from it for every key the YAML leaves out. A key the YAML sets to another value is
refused, listing each difference, unless --override applies the YAML's values (precedence:
command line > YAML > checkpoint; the optimizer state is kept).
"""

#: the settings a checkpoint restores (psdist.settings: the others come from the YAML)
RESTORED = restored_settings()


#: Per-epoch counters of faults and bad data (psdist.run.epoch) shown when not all zero.
COUNTS = (*FAULT_FIELDS, "bad_chunks", "val_bad_chunks", "nonfinite_batches", "overflow_batches", "pushes_nonfinite")


def summary_table(records: list[dict[str, Any]]) -> str:
    """A fixed-width table of the history (what the CLI prints at the end)."""
    if not records:
        return "(no epochs)"
    metrics = sorted(k for k in records[0] if k.startswith("val_") and k not in COUNTS)
    # fault and bad-data counters only when something happened: then they are the news
    counts = [k for k in COUNTS if any(r.get(k) for r in records)]
    cols = ["epoch", "train_loss", *metrics, "samples_per_s", "pushes_applied", "pushes_rejected",
            "staleness_mean", *counts, "wall_s"]
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1000 or math.isnan(v) else f"{v:.0f}"
        return str(v)
    rows = [[fmt(r.get(c, "")) for c in cols] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line sets (flags left out are absent, so ``null`` can be given)."""
    return {key.name: getattr(a, key.name) for keys in yaml_keys().values() for key in keys
            if key.flag and hasattr(a, key.name)}


def _train(a: argparse.Namespace) -> int:
    from psdist.config import load_config

    cfg = load_config(a.config, _overrides(a))
    resume = None
    if a.override and not a.resume:
        raise ConfigError("--override applies the YAML's settings over a checkpoint's: give it with "
                          "--resume CKPT (a run without --resume always trains with the YAML's)")
    settings = cfg.settings()  # every setting checked before any cluster starts or job is submitted
    if a.resume:
        from psdist.config import resume_settings
        from psdist.run.checkpoint import read_checkpoint

        resume = resume_settings(cfg, read_checkpoint(a.resume)[0], override=a.override,
                                 source=a.config, checkpoint=a.resume)
    client = cluster = None
    if a.cluster and a.scheduler:
        raise ConfigError("give --cluster (start jobs on a batch system) or --scheduler (use a running one), not both")
    if a.cluster or a.scheduler:
        settings.scaling.check_own_cluster()  # before any job is submitted
    if a.cluster:
        from psdist.cluster.batch import batch_cluster

        jobs = a.jobs if a.jobs is not None else settings.scaling.workers or 2
        # ps_shards > 1 (the run's YAML or --ps-shards) starts that many PS jobs; otherwise the
        # batch config's `ps: {shards: S}` says, and the training shards over those jobs
        shards = settings.scaling.ps_shards
        cluster, client = batch_cluster(a.cluster, jobs=jobs, ps={"shards": shards} if shards > 1 else None)
        settings = settings.replace(ps_shards=cluster.ps_shards)
    elif a.scheduler:
        from distributed import Client

        client = Client(a.scheduler)
    try:
        return _run(a, cfg, settings.replace(client=client), resume)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _trainer(a: argparse.Namespace, cfg: Any, settings: Any, resume: Any) -> Any:
    from psdist.trainer import Trainer  # loads torch and Dask: only to train

    flat = settings.to_kwargs()
    if not a.resume:
        return Trainer(data=cfg.dataset(), **flat)
    # settings a checkpoint restores come from it, or with --override from the YAML
    # (resume.kwargs); the others (workers, timeouts, metrics, ...) from the YAML
    kwargs = {k: v for k, v in flat.items() if k not in {*RESTORED, "model_fn", "loss_fn"}}
    trainer = Trainer.load(a.resume, flat["model_fn"], flat["loss_fn"], cfg.dataset(), **kwargs,
                           **resume.kwargs)
    for model, lr in resume.lrs.items():
        # the server restores the rate stored in the optimizer state, not the new optimizer's
        trainer.set_lr(lr, model=model)
    where = f"epoch {trainer.epoch}" + (" (mid-epoch)" if trainer.resumes_mid_epoch else "")
    print(f"resuming {a.resume} at {where}, version {trainer.version}", file=sys.stderr)
    print(resume.describe(a.resume), file=sys.stderr)
    return trainer


def _run(a: argparse.Namespace, cfg: Any, settings: Any, resume: Any) -> int:
    from psdist.progress import progress_bar

    trainer = _trainer(a, cfg, settings, resume)
    # after a crash, `--resume` alone finishes the planned run; `--epochs N` trains N more
    epochs = cfg.epochs - trainer.epoch if a.resume and not hasattr(a, "epochs") else cfg.epochs
    if epochs < 1:
        print(f"{a.resume} has trained all {trainer.epoch} epochs of the config; give --epochs N for N more",
              file=sys.stderr)
        return 0
    history = trainer.fit(epochs, progress=None if a.quiet else progress_bar(epochs, trainer.epoch))
    print(summary_table(history.records))
    if trainer.stopped_reason:
        print(f"stopped early: {trainer.stopped_reason}")
    path = settings.faults.checkpoints.path
    if path:
        trainer.save(path)
        print(f"checkpoint written to {path}")
    if a.trace:
        trainer.trace(a.trace)
        print(f"timeline written to {a.trace} (open in chrome://tracing or ui.perfetto.dev)")
    if a.history:
        if a.history.endswith(".csv"):
            history.to_csv(a.history)
        else:
            history.to_json(a.history)
    return 0


GENERATORS = {
    "jet-images": "toy quark/gluon jet images, seconds (psdist.hep.jetimages)",
    "jets": "Pythia 8 + FastJet jets: --kind qg|wqcd|tqcd (psdist.hep.pythia)",
    "events": "Pythia 8 events: ttbar / W+jets / Z+jets / QCD (psdist.hep.pythia)",
    "showers": "parametric 3D calorimeter showers: e-, gamma, pi+ (psdist.hep.showers)",
}


def _generate(a: argparse.Namespace) -> int:
    from psdist.hep import jetimages, showers

    if a.kind == "jet-images":
        jetimages.main(a.args)
    elif a.kind == "showers":
        showers.main(a.args)
    else:
        from psdist.hep import pythia

        pythia.main([a.kind, *a.args])
    print(f"psdist: {a.kind} written", file=sys.stderr)
    return 0


def _flag_value(key: Any) -> Any:
    """A flag's text read as the YAML would read it (``auto``, ``null``, ``4``), else kept as text."""
    def parse(text: str) -> Any:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        # a file name such as 2024 stays a name where only text fits; errors name the flag
        return text if mismatch(value, key.schema) and not mismatch(text, key.schema) else value
    return parse


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of config keys (psdist.settings): their help is the key's."""
    from psdist.settings import yaml_keys

    group = parser.add_argument_group("settings", "each sets the config key it names (command line > YAML), "
                                      "written as in YAML\n(null, auto); every key: psdist schema")
    for key in (k for keys in yaml_keys().values() for k in keys if k.flag):
        flag, _, metavar = key.flag.partition(" ")
        default = yaml.safe_dump(key.default, default_flow_style=True).removesuffix("...\n").strip()
        help = f"{key.name}: {key.help} (default {default})".replace("%", "%%")
        group.add_argument(flag, dest=key.name, metavar=metavar or None, type=_flag_value(key),
                           default=argparse.SUPPRESS, help=help)


def _schema(a: argparse.Namespace) -> int:
    import json

    print(json.dumps(json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="psdist", description="Asynchronous data-parallel PyTorch training on Dask.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what psdist does")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a YAML config",
                       description=TRAIN_HELP.replace("{restored}", ", ".join(RESTORED)),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", help="YAML config file")
    _add_setting_flags(t)
    t.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a LocalCluster)")
    t.add_argument("--cluster", metavar="JOBQUEUE",
                   help="start the workers as batch jobs: a jobqueue/ config name or file (slurm-gpu, site.yaml)")
    t.add_argument("--jobs", type=int, help="data jobs with --cluster (default: the config's workers)")
    t.add_argument("--resume", metavar="CKPT",
                   help="continue from a checkpoint; a YAML setting stored there with another value "
                   f"({', '.join(RESTORED)}) is refused")
    t.add_argument("--override", action="store_true",
                   help="with --resume: train with the YAML's settings where they differ from the "
                   "checkpoint's (command line > YAML > checkpoint; the optimizer state is kept)")
    t.add_argument("--history", metavar="FILE", help="write the history (.json or .csv)")
    t.add_argument("--trace", metavar="FILE", help="write a Chrome-trace timeline of every worker (.json)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    sch = sub.add_parser("schema", help="print the JSON Schema of the YAML config (for editors)",
                         description="Print the JSON Schema of `psdist train`'s YAML config, made from "
                         "psdist.settings (docs/psdist-config.schema.json holds a copy).")
    sch.set_defaults(func=_schema)

    g = sub.add_parser(
        "generate", help="make an offline HEP dataset",
        description="Make a labelled HEP dataset offline and write it as a psdist Zarr group.\n\n"
        + "\n".join(f"  {k:11s} {v}" for k, v in GENERATORS.items())
        + "\n\nOptions depend on the kind: psdist generate KIND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("kind", choices=list(GENERATORS), help="what to generate")
    g.add_argument("args", nargs=argparse.REMAINDER, help="PATH and options of that generator")
    g.set_defaults(func=_generate)
    add_convert_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(a.func(a))
    except PsdistError as e:
        # a psdist error already says what is wrong and how to fix it: no traceback
        print(f"psdist: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
