"""Batch systems: a Dask cluster from one of the ready dask-jobqueue configurations in ``jobqueue/``.

Thin on purpose: dask-jobqueue owns job scripts, submission, scaling and adaptivity; this module
only reads a small YAML file, checks it against the batch system before anything is submitted,
and adds what a parameter server needs — a worker of its own that no scaling ever removes::

    from psdist.cluster.batch import batch_cluster
    cluster, client = batch_cluster("slurm-gpu", jobs=4)     # 4 data jobs + 1 parameter-server job
    trainer = psdist.Trainer(model_fn, loss_fn, data, client=client)
    cluster.adapt(minimum_jobs=1, maximum_jobs=8)             # data workers only
    trainer.fit(epochs=10)
    client.close(); cluster.close()                           # also cancels the PS job

A config file (``jobqueue/slurm-cpu.yaml``)::

    system: slurm          # slurm | pbs | lsf | sge | htcondor | oar
    gpus: 0                # GPUs per data job; checked against the batch system
    cluster: {...}         # keyword arguments of dask_jobqueue.SLURMCluster, unchanged
    ps: {...}              # overrides of those for the parameter server's job; shards: S starts S of them
    security: {ca_file: ~/.psdist/ca.pem, cert: ~/.psdist/cert.pem, key: ~/.psdist/key.pem}   # optional: TLS

**Where the parameter server lives.** An actor cannot move: a retired worker would take the
weights with it. The parameter server gets its own batch job, submitted with dask-jobqueue's own
job class and job script (name and resource ``psdist-ps``, the ``ps:`` overrides — no GPU) but
kept out of the cluster's worker spec, so ``cluster.scale`` and ``cluster.adapt`` count, start
and stop data jobs only. :class:`KeepParameterServer` keeps the scheduler from ever proposing
that worker (or any worker holding an actor) for retirement; closing the cluster cancels the
job.

**Sharded parameter servers.** ``ps: {shards: S}`` (or ``batch_cluster(..., ps={"shards": S})``)
submits S such jobs instead of one, each with the resource ``psdist-ps`` and a name of its own
(:func:`ps_name`: ``psdist-ps``, ``psdist-ps-1``, ...), so S parameter-server actors each find a
worker of their own (:func:`ps_worker_addresses`). ``shards`` is psdist's key: it never reaches
the dask-jobqueue job class. ``BatchConfig.shards`` and ``cluster.ps_shards`` say how many.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import yaml
from distributed.deploy.adaptive import Adaptive
from distributed.diagnostics.plugin import SchedulerPlugin

from psdist.cluster.worker import PS_RESOURCE
from psdist.errors import ClusterError, ConfigError

__all__ = [
    "PS_NAME",
    "PS_RESOURCE",
    "PS_SHARDS_KEY",
    "SYSTEMS",
    "BatchConfig",
    "DataAdaptive",
    "KeepParameterServer",
    "available_configs",
    "batch_cluster",
    "job_scripts",
    "load_cluster_config",
    "make_cluster",
    "preflight",
    "ps_job_scripts",
    "ps_name",
    "ps_worker_address",
    "ps_worker_addresses",
]

logger = logging.getLogger(__name__)

#: Worker name of the parameter server's dedicated worker (its resource: ``PS_RESOURCE``); with
#: several shards, the first one's (the others: :func:`ps_name`).
PS_NAME = "psdist-ps"

#: The key of ``ps:`` that is psdist's, not dask-jobqueue's: how many parameter-server jobs.
PS_SHARDS_KEY = "shards"


def ps_name(shard: int = 0) -> str:
    """Worker and job name of parameter-server shard ``shard``: ``psdist-ps``, ``psdist-ps-1``, ...

    Shard 0 keeps the unsharded name, so a one-shard config submits exactly the job it always did
    (same script, same ``squeue`` name). The others never clash with data workers, which
    dask-jobqueue names ``<name>-<n>`` (``psdist-0``, ``psdist-1``, ...).
    """
    return PS_NAME if shard == 0 else f"{PS_NAME}-{shard}"


def _check_shards(value: Any, where: str) -> int:
    """``value`` as a number of parameter-server shards, or a :class:`ConfigError` saying the fix."""
    # bool is an int in Python: ``shards: true`` is a typo for a count, not 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{where}: ps: shards={value!r} must be a whole number >= 1 (parameter-server jobs, one shard "
            "each; 1, the default, is one server): write shards: 2 under ps:, or pass ps={'shards': 2}"
        )
    return value


@dataclass(frozen=True)
class _System:
    cluster: str  # dask_jobqueue class name
    submit: str  # submission command (must exist on this machine to start jobs)
    needs_queue: bool


SYSTEMS: dict[str, _System] = {
    "slurm": _System("SLURMCluster", "sbatch", True),
    "pbs": _System("PBSCluster", "qsub", True),
    "lsf": _System("LSFCluster", "bsub", True),
    "sge": _System("SGECluster", "qsub", True),
    "htcondor": _System("HTCondorCluster", "condor_submit", False),
    "oar": _System("OARCluster", "oarsub", True),
}

#: Directories searched for a config given by name ("slurm-gpu"), after ``$PSDIST_JOBQUEUE``.
_SEARCH = (Path("jobqueue"), Path(__file__).resolve().parent.parent / "jobqueue")


def _jobqueue() -> Any:
    try:
        import dask_jobqueue
        import dask_jobqueue.config
    except ImportError as e:
        raise ClusterError(
            "batch systems need dask-jobqueue: pip install 'psdist[jobqueue]' (or pip install dask-jobqueue)"
        ) from e
    if dask.config.get("jobqueue", None) is None:
        # its defaults are registered once, at import; a reset of the global config since
        # (distributed.utils_test does one after every gen_cluster test) loses them
        dask_jobqueue.config.reconfigure()
    return dask_jobqueue


@dataclass(frozen=True)
class BatchConfig:
    """One ``jobqueue/*.yaml``: the batch system and the dask-jobqueue keyword arguments.

    ``ps`` is the ``ps:`` section as written, ``shards`` included (psdist's key, see
    :attr:`shards`); :meth:`ps_kwargs` leaves it out of what reaches dask-jobqueue. Every way of
    making one (:meth:`from_dict`, the constructor, ``dataclasses.replace``) checks it, so a bad
    value fails before any job is submitted.
    """

    system: str
    cluster: dict[str, Any]
    ps: dict[str, Any] = field(default_factory=dict)
    gpus: int = 0
    source: str = "<dict>"
    #: TLS: ``None`` (none), ``True`` (a temporary certificate) or ``{ca_file, cert, key}`` PEM files
    security: Any = None

    def __post_init__(self) -> None:
        _check_shards(self.ps.get(PS_SHARDS_KEY, 1), self.source)

    @property
    def shards(self) -> int:
        """Parameter-server jobs to start (``ps: {shards: S}``; 1 when not given)."""
        shards: int = self.ps.get(PS_SHARDS_KEY, 1)  # checked in __post_init__
        return shards

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> BatchConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: a batch config is a mapping with system: and cluster:")
        unknown = set(raw) - {"system", "cluster", "ps", "gpus", "security"}
        if PS_SHARDS_KEY in unknown:  # the likely slip: a psdist key one level too high
            raise ConfigError(f"{source}: shards: belongs under ps: (ps: {{shards: {raw[PS_SHARDS_KEY]!r}}})")
        if unknown:
            raise ConfigError(
                f"{source}: unknown keys {sorted(unknown)}; a batch config has system, gpus, cluster, ps, security "
                "(dask-jobqueue settings go under cluster:)"
            )
        system = raw.get("system")
        if system not in SYSTEMS:
            raise ConfigError(
                f"{source}: unknown batch system {system!r}; psdist knows {', '.join(SYSTEMS)} "
                "(system: slurm, for example)"
            )
        cluster, ps = raw.get("cluster") or {}, raw.get("ps") or {}
        for key, value in (("cluster", cluster), ("ps", ps)):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key}: must be a mapping of dask-jobqueue keyword arguments")
        gpus = raw.get("gpus", 0)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ConfigError(f"{source}: gpus={gpus!r} must be a whole number >= 0 (GPUs per data job)")
        security = raw.get("security")
        if "security" in cluster and security is not None:
            raise ConfigError(f"{source}: security is given twice (top level and under cluster:); keep one")
        if security is not None and not isinstance(security, (bool, dict)):
            raise ConfigError(
                f"{source}: security: {security!r} must be true (a temporary certificate) or a mapping "
                "{ca_file: ..., cert: ..., key: ...} of PEM files (see docs/security.md)"
            )
        return cls(system, dict(cluster), dict(ps), gpus, source, security)

    @property
    def cluster_class(self) -> type:
        """The dask-jobqueue cluster class (with psdist's parameter-server handling)."""
        return _psdist_class(self.system)

    def cluster_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The cluster's keyword arguments with ``overrides`` applied, checked (no batch system needed)."""
        kwargs = {**self.cluster, **overrides}
        if PS_SHARDS_KEY in kwargs:  # else dask-jobqueue refuses an unknown keyword, without the fix
            raise ConfigError(
                f"{self.source}: shards={kwargs[PS_SHARDS_KEY]!r} is not a dask-jobqueue setting: it belongs under "
                "ps: (ps: {shards: 2}), or pass ps={'shards': 2}"
            )
        if self.security is not None and "security" not in overrides:
            kwargs["security"] = self._security()
        kwargs.setdefault("name", "psdist")  # workers psdist-0, psdist-1, ...; the PS is psdist-ps
        system = SYSTEMS[self.system]
        if system.needs_queue and not kwargs.get("queue"):
            raise ConfigError(
                f"{self.source}: no queue for {self.system} jobs; set cluster.queue to a "
                f"{'partition (sinfo -s)' if self.system == 'slurm' else 'queue'} of your site, "
                "or pass queue=... (see jobqueue/README.md)"
            )
        if self.gpus:
            processes = kwargs.get("processes", 1)
            if processes > self.gpus:
                raise ConfigError(
                    f"{self.source}: processes={processes} for gpus={self.gpus}: each worker process needs a GPU "
                    f"of its own; use processes: {self.gpus} (one per GPU: each takes a different one of its job's "
                    "GPUs), or more gpus per job"
                )
            if not _has_gpu_resource(kwargs.get("worker_extra_args") or []):
                raise ConfigError(
                    f"{self.source}: gpus={self.gpus} but the workers get no GPU resource; add "
                    "worker_extra_args: [--resources, GPU=1] (psdist trains on CUDA where a worker has it)"
                )
        return kwargs

    def _security(self) -> Any:
        """The config's ``security:`` as a ``distributed.Security`` (files checked here) or ``None``."""
        from psdist.cluster.security import as_security

        try:
            return as_security(self.security)
        except ConfigError as e:
            raise ConfigError(f"{self.source}: {e}") from e

    def ps_kwargs(self, job_kwargs: dict[str, Any], shard: int = 0) -> dict[str, Any]:
        """One parameter-server job's keyword arguments: the data jobs' settings, the ``ps:``
        overrides (less ``shards``, which dask-jobqueue does not know), one process.

        Parameters
        ----------
        job_kwargs
            The data jobs' keyword arguments (the cluster's ``_job_kwargs``).
        shard
            Which of the :attr:`shards` jobs (0 to ``shards - 1``): it sets the job's name
            (:func:`ps_name`); every shard gets the same resource, ``psdist-ps=1``.
        """
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard={shard} is not one of this config's {self.shards} parameter-server shard(s)")
        overrides = {k: v for k, v in self.ps.items() if k != PS_SHARDS_KEY}
        name = ps_name(shard)
        kwargs = {**job_kwargs, **overrides, "processes": 1, "name": name, "job_name": name}
        args = list(kwargs.get("worker_extra_args") or [])
        kwargs["worker_extra_args"] = [*_drop_resources(args), "--resources", f"{PS_RESOURCE}=1"]
        return kwargs


def _has_gpu_resource(args: list[str]) -> bool:
    text = " ".join(map(str, args))
    return re.search(r"--resources[ =][\"']?[^-]*\bGPU=[1-9]", text) is not None


def _drop_resources(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--resources":
            skip = True
            continue
        if str(a).startswith("--resources="):
            continue
        out.append(a)
    return out


def available_configs() -> list[str]:
    """Names of the configurations found (``slurm-cpu``, ``slurm-gpu``, ...)."""
    names: set[str] = set()
    for d in _search_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def _search_dirs() -> list[Path]:
    env = os.environ.get("PSDIST_JOBQUEUE")
    return [*([Path(env)] if env else []), *_SEARCH]


def load_cluster_config(name_or_path: str | os.PathLike[str] | BatchConfig) -> BatchConfig:
    """Read a batch config: a path, or a name of ``jobqueue/`` (``"slurm-gpu"``)."""
    if isinstance(name_or_path, BatchConfig):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        stem = path.name.removesuffix(".yaml").removesuffix(".yml")
        found = [d / f"{stem}.yaml" for d in _search_dirs() if (d / f"{stem}.yaml").is_file()]
        if path.parent != Path(".") or not found:
            raise ConfigError(
                f"no batch config {text!r} (no such file): give a path or one of "
                f"{', '.join(available_configs()) or '(none found)'} (jobqueue/*.yaml; set PSDIST_JOBQUEUE "
                "to a directory of your own)"
            )
        path = found[0]
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return BatchConfig.from_dict(raw, str(path))


# ----------------------------------------------------------------------------- scheduler side


class KeepParameterServer(SchedulerPlugin):
    """Never offer the parameter server's worker (or any worker holding an actor) for retirement.

    ``Scheduler.workers_to_close`` — what ``Adaptive`` and ``retire_workers()`` without names use
    to choose — asks every scheduler plugin which candidates are valid. The PS worker looks idle
    (actor calls are not tasks), so without this it would be the first one chosen.
    """

    name = "psdist-keep-ps"

    def valid_workers_downscaling(self, scheduler: Any, workers: list[Any]) -> list[Any]:
        return [ws for ws in workers if not ws.actors and PS_RESOURCE not in ws.resources]


class DataAdaptive(Adaptive):
    """``Adaptive`` over data workers only (the default of ``adapt`` on psdist's clusters).

    The scheduler counts the parameter server's worker, the cluster's plan does not: plain
    ``Adaptive`` mixes the two and closes one data job too many, then starts it again (seen on
    SLURM: two idle data jobs, ``minimum_jobs=1``: both cancelled, one resubmitted).
    """

    def _extra(self) -> int:
        workers = (getattr(self.cluster, "scheduler_info", None) or {}).get("workers", {})
        return sum(1 for w in workers.values() if PS_RESOURCE in w.get("resources", {}))

    async def target(self) -> int:
        planned: int = await super().target()  # unannotated in distributed: typed here
        return max(0, planned - self._extra())

    async def workers_to_close(self, target: int) -> list[str]:
        return await super().workers_to_close(target + self._extra())


@functools.cache
def _psdist_class(system: str) -> type:
    """``Psdist<Cluster>``: the dask-jobqueue class plus the parameter server's job."""
    base = getattr(_jobqueue(), SYSTEMS[system].cluster)

    class PsdistCluster(base):  # type: ignore[misc,valid-type]
        #: the parameter servers' jobs (dask-jobqueue Jobs), shard 0 first, started by
        #: :func:`batch_cluster`; a tuple, so the class default is not one list shared by all
        ps_jobs: tuple[Any, ...] = ()

        @property
        def ps_job(self) -> Any:
            """The first parameter server's job (the only one without sharding), or ``None``."""
            return self.ps_jobs[0] if self.ps_jobs else None

        @ps_job.setter
        def ps_job(self, job: Any) -> None:  # the attribute this used to be
            self.ps_jobs = () if job is None else (job,)

        @property
        def ps_shards(self) -> int:
            """How many parameter-server jobs this cluster started (``cfg.shards`` once running)."""
            return len(self.ps_jobs)

        def new_ps_job(self, cfg: BatchConfig, shard: int = 0) -> Any:
            """Parameter-server shard ``shard``'s job, not yet submitted: the data jobs' settings + ``cfg.ps``."""
            address = (getattr(self.scheduler, "contact_address", None) or getattr(self.scheduler, "address", None)
                       or "tcp://<insert-scheduler-address-here>:8786")
            return self.job_cls(address, **cfg.ps_kwargs(self._job_kwargs, shard))

        def new_ps_jobs(self, cfg: BatchConfig) -> list[Any]:
            """All ``cfg.shards`` parameter-server jobs, shard 0 first, none submitted."""
            return [self.new_ps_job(cfg, shard) for shard in range(cfg.shards)]

        def adapt(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("Adaptive", DataAdaptive)
            return super().adapt(*args, **kwargs)

        async def _close(self) -> None:
            try:
                await super()._close()
            finally:
                # their workers left with the scheduler; make sure every job ends, even when
                # cancelling one of them fails (then the first failure is raised after the rest)
                failed: list[BaseException] = []
                for job in self.ps_jobs:
                    try:
                        await job.close()
                    except Exception as e:
                        failed.append(e)
                if failed:
                    raise failed[0]

    PsdistCluster.__name__ = PsdistCluster.__qualname__ = f"Psdist{base.__name__}"
    return PsdistCluster


def make_cluster(config: str | os.PathLike[str] | BatchConfig, **overrides: Any) -> Any:
    """The dask-jobqueue cluster object, with its scheduler but no jobs (``cluster.job_script()``)."""
    cfg = load_cluster_config(config)
    kwargs = cfg.cluster_kwargs(**overrides)
    _jobqueue()  # also restores dask-jobqueue's config defaults if they were reset since
    try:
        return cfg.cluster_class(**kwargs)
    except (TypeError, ValueError) as e:  # dask-jobqueue's own checks: bad or missing keywords
        raise ConfigError(f"{cfg.source}: dask_jobqueue.{SYSTEMS[cfg.system].cluster} refused it: {e}") from e


def job_scripts(config: str | os.PathLike[str] | BatchConfig, **overrides: Any) -> tuple[str, str]:
    """The job scripts (data worker, parameter server) a config submits; nothing is submitted.

    With ``ps: {shards: S}``, the parameter server's script is shard 0's; :func:`ps_job_scripts`
    gives all of them.
    """
    cfg = load_cluster_config(config)
    cluster = make_cluster(cfg, **overrides)
    try:
        return cluster.job_script(), cluster.new_ps_job(cfg).job_script()
    finally:
        cluster.close()


def ps_job_scripts(config: str | os.PathLike[str] | BatchConfig, **overrides: Any) -> list[str]:
    """The parameter servers' job scripts, one per shard (shard 0 first); nothing is submitted.

    ``overrides`` are dask-jobqueue keyword arguments, as for :func:`job_scripts`.
    """
    cfg = load_cluster_config(config)
    cluster = make_cluster(cfg, **overrides)
    try:
        return [job.job_script() for job in cluster.new_ps_jobs(cfg)]
    finally:
        cluster.close()


# ----------------------------------------------------------------------------- batch-system checks


def _run(cmd: list[str], timeout: float = 20) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{' '.join(cmd)} did not answer within {timeout:g} s; is the batch system up?") from e
    except subprocess.CalledProcessError as e:
        raise ClusterError(f"{' '.join(cmd)} failed ({e.returncode}): {e.stderr.strip()}") from e
    return out.stdout


def preflight(config: str | os.PathLike[str] | BatchConfig, **overrides: Any) -> None:
    """Check a config against this machine's batch system before anything is submitted.

    The submission command must exist; on SLURM the partition must exist and, for a GPU
    variant, offer GPUs (``sinfo -o %G``). Other systems: only the submission command.
    """
    cfg = load_cluster_config(config)
    kwargs = cfg.cluster_kwargs(**overrides)
    system = SYSTEMS[cfg.system]
    if shutil.which(system.submit) is None:
        raise ClusterError(
            f"{system.submit} not found: {cfg.source} submits {cfg.system} jobs, so run it on a "
            f"{cfg.system} submit (login) node (module load {cfg.system}?), or train without a batch system"
        )
    if cfg.system == "slurm":
        _check_slurm(cfg, kwargs)


def _check_slurm(cfg: BatchConfig, kwargs: dict[str, Any]) -> None:
    queues = {cfg.ps.get("queue") or kwargs["queue"], kwargs["queue"]}
    partitions = [p.rstrip("*") for p in _run(["sinfo", "-h", "-o", "%P"]).split()]
    for queue in sorted(queues):
        if queue not in partitions:
            raise ClusterError(
                f"{cfg.source}: SLURM has no partition {queue!r}; partitions here: {', '.join(partitions)} "
                "(set queue: in the config, or pass queue=...)"
            )
    if cfg.gpus:
        gres = _run(["sinfo", "-h", "-p", kwargs["queue"], "-o", "%G"]).split()
        if not any("gpu" in g.lower() for g in gres):
            name = Path(cfg.source).name
            cpu = f"the CPU variant ({name.replace('gpu', 'cpu')})" if "gpu" in name else "a CPU config (gpus: 0)"
            raise ClusterError(
                f"{cfg.source} asks for {cfg.gpus} GPU(s) per job, but SLURM partition {kwargs['queue']!r} "
                f"has no GPUs (sinfo -o %G: {' '.join(gres) or 'nothing'}); use {cpu} or a GPU partition (queue=...)"
            )


# ----------------------------------------------------------------------------- the cluster


def ps_worker_addresses(client: Any) -> list[str]:
    """Addresses of every dedicated parameter-server worker (resource ``psdist-ps``), sorted."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(a for a, w in info.items() if PS_RESOURCE in (w.get("resources") or {}))


def ps_worker_address(client: Any) -> str | None:
    """Address of the dedicated parameter-server worker (the first of several shards'), if any."""
    found = ps_worker_addresses(client)
    return found[0] if found else None


def _wait(what: str, ready: Any, timeout: float, hint: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} did not start within {timeout:g} s; {hint}")
        time.sleep(0.2)


def batch_cluster(
    config: str | os.PathLike[str] | BatchConfig,
    jobs: int = 1,
    *,
    adapt: tuple[int, int] | None = None,
    ps: dict[str, Any] | None = None,
    wait: bool = True,
    timeout: float = 600.0,
    check: bool = True,
    **overrides: Any,
) -> tuple[Any, Any]:
    """Start a batch-system cluster for psdist: ``shards`` parameter-server jobs plus ``jobs`` data jobs.

    Parameters
    ----------
    config
        A ``jobqueue/`` name (``"slurm-gpu"``), a path to such a YAML file, or a :class:`BatchConfig`.
    jobs
        Data jobs to start now (``cluster.scale(jobs=...)``); each runs ``processes`` workers.
    adapt
        ``(minimum_jobs, maximum_jobs)``: let the data jobs follow the load (the PS job never does).
    ps
        Overrides for the parameter server's job (on top of the config's ``ps:``);
        ``{"shards": S}`` starts S parameter-server jobs (default: the config's, else 1).
    wait
        Return only once the PS workers (one per shard) and the data workers of ``jobs`` have joined.
    timeout
        Seconds to wait for them (the batch queue may be slow).
    check
        Run :func:`preflight` first (submission command, partition, GPUs).
    overrides
        dask-jobqueue keyword arguments replacing the config's (``queue=``, ``walltime=``, ...).

    Returns ``(cluster, client)``; close both (closing the cluster cancels every job).
    ``cluster.ps_shards`` is the number of parameter-server jobs, ``cluster.ps_jobs`` the jobs.
    """
    from distributed import Client

    cfg = load_cluster_config(config)
    if ps:
        if PS_SHARDS_KEY in ps:  # name the argument, not the config file, when the value is bad
            _check_shards(ps[PS_SHARDS_KEY], "batch_cluster(ps=...)")
        cfg = dataclasses.replace(cfg, ps={**cfg.ps, **ps})
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ConfigError(f"jobs={jobs!r} must be a whole number >= 0 (data jobs to start)")
    if check:
        preflight(cfg, **overrides)
    cluster = make_cluster(cfg, **overrides)
    client = None
    try:
        for shard, job in enumerate(cluster.new_ps_jobs(cfg)):
            cluster.ps_jobs = (*cluster.ps_jobs, job)  # before submitting: closing the cluster cancels it
            try:
                cluster.sync(job.start)
            except RuntimeError as e:  # dask-jobqueue: the submission command failed
                which = "" if cfg.shards == 1 else f" (shard {shard} of {cfg.shards})"
                raise ClusterError(
                    f"{cfg.source}: the batch system refused the parameter server's job{which}: {e}"
                ) from e
            logger.info("psdist: parameter-server job %s submitted (%s)", job.job_id, job.name)
        client = Client(cluster)
        client.register_plugin(KeepParameterServer(), name=KeepParameterServer.name)
        if jobs:
            cluster.scale(jobs=jobs)
        if adapt is not None:
            cluster.adapt(minimum_jobs=adapt[0], maximum_jobs=adapt[1])
        if wait:
            ids = ", ".join(str(j.job_id) for j in cluster.ps_jobs)
            hint = f"the batch queue may be busy ({SYSTEMS[cfg.system].submit} job(s) {ids}); raise timeout=..."
            what = "the parameter server's worker" if cfg.shards == 1 else f"the {cfg.shards} parameter servers' workers"
            _wait(what, lambda: len(ps_worker_addresses(client)) >= cfg.shards, timeout, hint)
            n = jobs * int(cluster._dummy_job.worker_processes) + cfg.shards
            _wait(f"{n - cfg.shards} data worker(s)",
                  lambda: len(client.scheduler_info(n_workers=-1)["workers"]) >= n, timeout, hint)
    except BaseException:
        if client is not None:
            client.close()
        cluster.close()
        raise
    return cluster, client
