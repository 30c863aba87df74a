"""The ``psdist`` command line.

    psdist train examples/jet_images.yaml            # train as the config says
    psdist train cfg.yaml --epochs 10 --workers 4    # override a few settings
    psdist train cfg.yaml --save run.ckpt            # checkpoint every epoch and 60 s
    psdist train cfg.yaml --resume run.ckpt          # finish a run after a crash (or --epochs N more)
    psdist train cfg.yaml --resume run.ckpt --override   # ... with the YAML's changed optimizer/rule/batch size
    psdist generate jet-images data/jets.zarr        # make an offline HEP dataset
    psdist convert root out.zarr sig.root:1 bkg.root:0 --jagged part_pt part_eta --max-particles 30
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import Any

from psdist.data.convert_cli import add_convert_parser
from psdist.errors import ConfigError, PsdistError
from psdist.run.epoch import FAULT_FIELDS

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

With --resume, the training settings a checkpoint stores (optimizer, rule, batch_size,
push_every, max_staleness, seed) are taken from it for every key the YAML leaves out. A key the
YAML sets to another value is refused, listing each difference, unless --override applies the
YAML's values (precedence: command line > YAML > checkpoint; the optimizer state is kept).
"""


#: Per-epoch counters of faults and bad data (psdist.run.epoch) shown when not all zero.
COUNTS = (*FAULT_FIELDS, "bad_chunks", "val_bad_chunks", "nonfinite_batches", "pushes_nonfinite")


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


def _train(a: argparse.Namespace) -> int:
    from psdist.config import load_config

    cfg = load_config(a.config, {"epochs": a.epochs, "workers": a.workers,
                                 "threads_per_worker": a.threads, "checkpoint": a.save,
                                 "checkpoint_every_versions": a.checkpoint_every_versions,
                                 "checkpoint_every_seconds": a.checkpoint_every_seconds})
    settings = None
    if a.override and not a.resume:
        raise ConfigError("--override applies the YAML's settings over a checkpoint's: give it with "
                          "--resume CKPT (a run without --resume always trains with the YAML's)")
    if a.resume:  # refused before any cluster starts or batch job is submitted
        from psdist.config import resume_settings
        from psdist.run.checkpoint import read_checkpoint

        settings = resume_settings(cfg, read_checkpoint(a.resume)[0], override=a.override,
                                   source=a.config, checkpoint=a.resume)
    client = cluster = None
    if a.cluster and a.scheduler:
        raise ConfigError("give --cluster (start jobs on a batch system) or --scheduler (use a running one), not both")
    if a.cluster:
        from psdist.cluster.batch import batch_cluster

        cluster, client = batch_cluster(a.cluster, jobs=a.jobs if a.jobs is not None else cfg.workers)
    elif a.scheduler:
        from distributed import Client

        client = Client(a.scheduler)
    try:
        return _run(a, cfg, client, settings)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _run(a: argparse.Namespace, cfg: Any, client: Any, settings: Any) -> int:
    from psdist.progress import progress_bar
    from psdist.trainer import Trainer

    kwargs = cfg.trainer_kwargs()
    if a.resume:
        # settings the checkpoint does not store come from the YAML; the stored ones from the
        # checkpoint, or with --override from the YAML (settings.kwargs)
        trainer = Trainer.load(a.resume, cfg.model_fn(), cfg.loss_fn(), cfg.dataset(), client=client,
                               workers=cfg.workers, threads_per_worker=cfg.threads_per_worker,
                               timeout=cfg.timeout, malloc_fix=cfg.malloc_fix,
                               early_stopping=kwargs["early_stopping"], metrics=kwargs["metrics"],
                               step=kwargs["step"], checkpoints=kwargs["checkpoints"],
                               chunk_timeout=kwargs["chunk_timeout"], **settings.kwargs)
        for model, lr in settings.lrs.items():
            # the server restores the rate stored in the optimizer state, not the new optimizer's
            trainer.set_lr(lr, model=model)
        where = f"epoch {trainer.epoch}" + (" (mid-epoch)" if trainer.resumes_mid_epoch else "")
        print(f"resuming {a.resume} at {where}, version {trainer.version}", file=sys.stderr)
        print(settings.describe(a.resume), file=sys.stderr)
    else:
        trainer = Trainer(cfg.model_fn(), cfg.loss_fn(), cfg.dataset(), client=client, **kwargs)
    # after a crash, `--resume` alone finishes the planned run; `--epochs N` trains N more
    epochs = cfg.epochs - trainer.epoch if a.resume and a.epochs is None else cfg.epochs
    if epochs < 1:
        print(f"{a.resume} has trained all {trainer.epoch} epochs of the config; give --epochs N for N more",
              file=sys.stderr)
        return 0
    history = trainer.fit(epochs, progress=None if a.quiet else progress_bar(epochs, trainer.epoch))
    print(summary_table(history.records))
    if trainer.stopped_reason:
        print(f"stopped early: {trainer.stopped_reason}")
    if cfg.checkpoint:
        trainer.save(cfg.checkpoint)
        print(f"checkpoint written to {cfg.checkpoint}")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="psdist", description="Asynchronous data-parallel PyTorch training on Dask.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what psdist does")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a YAML config", description=TRAIN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", help="YAML config file")
    t.add_argument("--epochs", type=int,
                   help="override the config's epochs (with --resume: train this many more)")
    t.add_argument("--workers", type=int, help="data workers of the embedded cluster")
    t.add_argument("--threads", type=int, help="threads per worker (torch threads)")
    t.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a LocalCluster)")
    t.add_argument("--cluster", metavar="JOBQUEUE",
                   help="start the workers as batch jobs: a jobqueue/ config name or file (slurm-gpu, site.yaml)")
    t.add_argument("--jobs", type=int, help="data jobs with --cluster (default: the config's workers)")
    t.add_argument("--save", metavar="CKPT",
                   help="checkpoint file: written at each epoch end, every --checkpoint-every-* and at the end")
    t.add_argument("--checkpoint-every-versions", type=int, metavar="N",
                   help="also checkpoint every N server updates within an epoch")
    t.add_argument("--checkpoint-every-seconds", type=float, metavar="T",
                   help="also checkpoint every T seconds within an epoch (default 60)")
    t.add_argument("--resume", metavar="CKPT",
                   help="continue from a checkpoint; a YAML setting stored there with another value "
                   "(optimizer, rule, batch_size, push_every, max_staleness, seed) is refused")
    t.add_argument("--override", action="store_true",
                   help="with --resume: train with the YAML's settings where they differ from the "
                   "checkpoint's (command line > YAML > checkpoint; the optimizer state is kept)")
    t.add_argument("--history", metavar="FILE", help="write the history (.json or .csv)")
    t.add_argument("--trace", metavar="FILE", help="write a Chrome-trace timeline of every worker (.json)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

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
        return a.func(a)
    except PsdistError as e:
        # a psdist error already says what is wrong and how to fix it: no traceback
        print(f"psdist: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
