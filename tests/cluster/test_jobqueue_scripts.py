"""The batch-system configurations of jobqueue/, offline: golden job scripts and bad input.

Each config is built into its dask-jobqueue cluster object (a local scheduler, no job submitted)
and its two job scripts — a data worker's and the parameter server's — are compared with
tests/golden/jobqueue/<name>.sh and <name>.ps.sh after the volatile parts (scheduler address,
python path) are normalised. After an intended change: PSDIST_UPDATE_GOLDEN=1 pytest this file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask_jobqueue")

from psdist.cluster import batch
from psdist.errors import ClusterError, ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.stem for p in (ROOT / "jobqueue").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "jobqueue"
LOCAL = {"scheduler_options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
MALLOC = "export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432"
# what asks a batch system for a GPU, per system
GPU_LINES = {
    "slurm": "#SBATCH --gres=gpu:1",
    "pbs": ":ngpus=1",
    "lsf": '#BSUB -gpu "num=1',
    "sge": "gpu=1",
    "htcondor": "request_gpus = 1",
    "oar": "/gpu=1",
}


@pytest.fixture(autouse=True)
def package_defaults(monkeypatch: pytest.MonkeyPatch):
    """dask-jobqueue's own defaults only: no site jobqueue.yaml, no PBS_ACCOUNT from the environment."""
    import dask
    import dask_jobqueue
    import yaml

    defaults = yaml.safe_load((Path(dask_jobqueue.__file__).parent / "jobqueue.yaml").read_text())
    monkeypatch.delenv("PBS_ACCOUNT", raising=False)
    with dask.config.set(jobqueue=defaults["jobqueue"]):
        yield


def normalise(script: str) -> str:
    """Replace what changes from run to run: the scheduler's address and this python."""
    script = re.sub(r"tcp://[\w.\-]+:\d+", "tcp://<scheduler>", script)
    return script.replace(sys.executable, "<python>")


def scripts(name: str) -> tuple[str, str]:
    data, ps = batch.job_scripts(name, **LOCAL)
    return normalise(data), normalise(ps)


def test_every_system_has_a_cpu_and_a_gpu_variant():
    assert CONFIGS == sorted(f"{s}-{v}" for s in batch.SYSTEMS for v in ("cpu", "gpu"))
    assert batch.available_configs() == CONFIGS  # found by name from anywhere
    for name in CONFIGS:
        cfg = batch.load_cluster_config(name)
        assert cfg.system == name.split("-")[0]
        assert cfg.gpus == (1 if name.endswith("gpu") else 0)


@pytest.mark.parametrize("name", CONFIGS)
def test_job_scripts_match_golden(name: str):
    data, ps = scripts(name)
    for suffix, text in ((".sh", data), (".ps.sh", ps)):
        path = GOLDEN / f"{name}{suffix}"
        if os.environ.get("PSDIST_UPDATE_GOLDEN"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.is_file(), f"no golden file {path}; run PSDIST_UPDATE_GOLDEN=1 pytest {__file__}"
        assert text == path.read_text(), f"{name}{suffix} changed; if intended, PSDIST_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", CONFIGS)
def test_job_script_contents(name: str):
    """What the golden files must hold, spelled out: prologue, resources, GPU lines, the PS job."""
    system, variant = name.split("-")
    data, ps = scripts(name)
    for text in (data, ps):
        lines = text.splitlines()
        worker = next(i for i, line in enumerate(lines) if "distributed.cli.dask_worker" in line)
        # the malloc fix runs in the job before the worker starts (HTCondor: in the same sh -c)
        assert MALLOC in (lines[worker] if system == "htcondor" else "\n".join(lines[:worker]))
        assert "<python> -m distributed.cli.dask_worker tcp://<scheduler>" in text
        assert "--nanny" in text
        assert ("$_CONDOR_SCRATCH_DIR" if system == "htcondor" else "--local-directory") in text
    # one worker process per job (psdist trains one chunk at a time per worker)
    assert "--nworkers" not in data
    # the PS: its own name and resource, never a GPU
    assert "--name psdist-ps" in ps and "--resources psdist-ps=1" in ps
    assert "GPU=" not in ps and GPU_LINES[system] not in ps
    if variant == "gpu":
        assert "--resources GPU=1" in data
        assert GPU_LINES[system] in data
    else:
        assert "GPU" not in data and GPU_LINES[system] not in data
    if system == "slurm":
        assert "#SBATCH -p " in data and "#SBATCH -t 02:00:00" in data and "#SBATCH -J psdist-ps" in ps


def test_overrides_reach_the_script():
    data, ps = batch.job_scripts("slurm-cpu", queue="short", walltime="00:30:00", account="phys",
                                 cores=2, memory="3GiB", **LOCAL)
    for text in (data, ps):
        assert "#SBATCH -p short" in text and "#SBATCH -A phys" in text and "#SBATCH -t 00:30:00" in text
    assert "#SBATCH --cpus-per-task=2" in data and "#SBATCH --mem=3G" in data
    assert "#SBATCH --cpus-per-task=2" in ps and "#SBATCH --mem=8G" in ps  # the config's ps: keeps its own


# ----------------------------------------------------------------------------- bad input


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def test_unknown_batch_system(tmp_path: Path):
    path = write(tmp_path, "system: torque-ng\ncluster: {queue: q, cores: 1, memory: 1GiB}\n")
    with pytest.raises(ConfigError, match=r"unknown batch system 'torque-ng'.*slurm, pbs, lsf, sge, htcondor, oar"):
        batch.load_cluster_config(path)


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"no batch config 'slurm-tpu' \(no such file\).*slurm-cpu, slurm-gpu"):
        batch.load_cluster_config("slurm-tpu")


def test_unknown_top_level_key(tmp_path: Path):
    path = write(tmp_path, "system: slurm\nqueue: cpu\ncluster: {cores: 1, memory: 1GiB}\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['queue'\].*under cluster:"):
        batch.load_cluster_config(path)


def test_missing_queue(tmp_path: Path):
    path = write(tmp_path, "system: slurm\ncluster: {cores: 1, memory: 1GiB}\n")
    with pytest.raises(ConfigError, match=r"no queue for slurm jobs; set cluster.queue to a partition \(sinfo -s\)"):
        batch.job_scripts(path, **LOCAL)
    with pytest.raises(ConfigError, match="no queue for pbs jobs"):
        batch.job_scripts("pbs-cpu", queue=None, **LOCAL)
    batch.job_scripts("htcondor-cpu", **LOCAL)  # HTCondor has no queues


def test_gpu_variant_without_gpu_resource_or_with_several_processes(tmp_path: Path):
    path = write(tmp_path, "system: slurm\ngpus: 1\ncluster: {queue: gpu, cores: 1, memory: 1GiB}\n")
    with pytest.raises(ConfigError, match=r"no GPU resource; add worker_extra_args: \[--resources, GPU=1\]"):
        batch.job_scripts(path, **LOCAL)
    with pytest.raises(ConfigError, match="processes=2 for gpus=1: each worker process needs a GPU of its own"):
        batch.job_scripts("slurm-gpu", processes=2, **LOCAL)
    # a 4-GPU job may run 4 worker processes: each takes another of the job's GPUs
    path = write(tmp_path, "system: slurm\ngpus: 4\ncluster: {queue: gpu, cores: 4, memory: 1GiB, processes: 4, "
                           "worker_extra_args: [--resources, GPU=1]}\n")
    assert "--nworkers 4" in batch.job_scripts(path, **LOCAL)[0]


def test_dask_jobqueue_refusal_names_the_config():
    with pytest.raises(ConfigError, match=r"slurm-cpu.yaml: dask_jobqueue.SLURMCluster refused it:.*wallclock"):
        batch.job_scripts("slurm-cpu", wallclock="1:00:00", **LOCAL)


def test_missing_dask_jobqueue(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails
    batch._psdist_class.cache_clear()
    try:
        with pytest.raises(ClusterError, match=r"pip install 'psdist\[jobqueue\]'"):
            batch.job_scripts("slurm-cpu", **LOCAL)
    finally:
        batch._psdist_class.cache_clear()


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partitions: str, gres: str,
               accept: bool = False) -> Path:
    """sbatch and sinfo stand-ins on PATH: a SLURM with these partitions and this gres.

    Every call is appended to the returned log file, one line each (``sinfo -h -o %P``), so a
    test can tell which checks ran and that nothing was submitted. sbatch refuses every job,
    unless ``accept``: then it keeps each script as ``submitted/<n>.sh`` and answers job id
    ``<n>`` (1, 2, ...), and scancel logs its call; no job ever runs.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    if accept:
        kept = tmp_path / "submitted"
        kept.mkdir()
        (bin_dir / "sbatch").write_text(
            f'#!/bin/sh\necho "sbatch" >> {log}\nn=$(($(ls {kept} | wc -l) + 1))\n'
            f'cp "$1" {kept}/$n.sh\necho "Submitted batch job $n"\n'
        )
        (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "scancel $*" >> {log}\n')
    else:
        (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "sbatch $*" >> {log}\nexit 1\n')
    (bin_dir / "sinfo").write_text(
        f'#!/bin/sh\necho "sinfo $*" >> {log}\n'
        f'case "$*" in *%G*) echo "{gres}" ;; *) printf "%s\\n" {partitions} ;; esac\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path) -> list[str]:
    """The fake SLURM commands run since the log was last emptied, and empty it."""
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_gpu_variant_on_a_slurm_without_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    log = fake_slurm(tmp_path, monkeypatch, "debug* gpu", "(null)")
    with pytest.raises(ClusterError, match=r"partition 'gpu' has no GPUs \(sinfo -o %G: \(null\)\); use the CPU variant \(slurm-cpu.yaml\)"):
        batch.batch_cluster("slurm-gpu", jobs=1)
    # refused by the GPU check on the config's partition, before any job was submitted
    assert calls(log) == ["sinfo -h -o %P", "sinfo -h -p gpu -o %G"]
    # the CPU variant passes the same checks: the partition exists, and it asks for no GPU
    assert batch.preflight("slurm-cpu", queue="debug") is None
    assert calls(log) == ["sinfo -h -o %P"]


def test_gpu_variant_on_a_slurm_with_gpus_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    log = fake_slurm(tmp_path, monkeypatch, "debug* gpu", "gpu:a100:4")
    # good: slurm-gpu's partition (gpu) exists and offers GPUs; both were asked, nothing submitted
    assert batch.preflight("slurm-gpu") is None
    assert calls(log) == ["sinfo -h -o %P", "sinfo -h -p gpu -o %G"]
    # bad: the same SLURM, a partition it does not have; refused before the GPU check
    with pytest.raises(ClusterError, match=r"SLURM has no partition 'a100'; partitions here: debug, gpu \(set queue: in the config, or pass queue=...\)"):
        batch.preflight("slurm-gpu", queue="a100")
    assert calls(log) == ["sinfo -h -o %P"]


def test_partition_that_does_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_slurm(tmp_path, monkeypatch, "debug*", "(null)")
    with pytest.raises(ClusterError, match=r"SLURM has no partition 'cpu'; partitions here: debug"):
        batch.batch_cluster("slurm-cpu", jobs=1)


def test_not_a_submit_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qsub here
    with pytest.raises(ClusterError, match=r"qsub not found: .*pbs-cpu.yaml submits pbs jobs"):
        batch.batch_cluster("pbs-cpu", jobs=1)


def test_jobs_must_be_a_count():
    with pytest.raises(ConfigError, match="jobs=-1"):
        batch.batch_cluster("slurm-cpu", jobs=-1, check=False)


# ----------------------------------------------------------------------------- the PS is never retired


def test_scheduler_never_offers_the_ps_worker_or_an_actor_holder_for_retirement():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        cluster.scale(3)
        client.wait_for_workers(3)
        addrs = sorted(client.scheduler_info()["workers"])
        ps, holder, free = addrs

        async def mark(dask_worker):
            await dask_worker.set_resources(**{batch.PS_RESOURCE: 1})

        client.run(mark, workers=[ps])
        actor = client.submit(Counter, actor=True, workers=[holder]).result()
        assert actor is not None

        def candidates(dask_scheduler):
            return sorted(dask_scheduler.workers_to_close(n=3))

        assert client.run_on_scheduler(candidates) == addrs  # idle workers: all three would go
        client.register_plugin(batch.KeepParameterServer(), name=batch.KeepParameterServer.name)
        assert client.run_on_scheduler(candidates) == [free]


class Counter:
    n = 0


def test_a_refused_submission_is_a_cluster_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_slurm(tmp_path, monkeypatch, "debug*", "(null)")  # its sbatch exits 1
    with pytest.raises(ClusterError, match="the batch system refused the parameter server's job"):
        batch.batch_cluster("slurm-cpu", jobs=1, queue="debug", timeout=5, **LOCAL)


def test_survives_a_reset_of_the_dask_config(monkeypatch: pytest.MonkeyPatch):
    """distributed.utils_test resets the global config after each gen_cluster test, dropping the
    defaults dask-jobqueue registered at import."""
    import dask

    monkeypatch.delitem(dask.config.config, "jobqueue")
    assert "#SBATCH -p cpu" in batch.job_scripts("slurm-cpu", **LOCAL)[0]


# ----------------------------------------------------------------------------- sharded parameter servers


def sharded(name: str, shards: int) -> batch.BatchConfig:
    cfg = batch.load_cluster_config(name)
    return dataclasses.replace(cfg, ps={**cfg.ps, "shards": shards})


@pytest.mark.parametrize("name", [n for n in CONFIGS if n.endswith("-gpu")])
def test_ps_shards_are_one_cpu_job_each_with_the_ps_resource(name: str):
    system = name.split("-")[0]
    cfg = sharded(name, 3)
    assert cfg.shards == 3 and batch.load_cluster_config(name).shards == 1  # the default: one server
    scripts = [normalise(s) for s in batch.ps_job_scripts(cfg, **LOCAL)]
    assert len(scripts) == 3
    for shard, script in enumerate(scripts):
        # each its own worker name, all the same resource (what the PS placement looks for), no GPU
        assert f"--name {batch.ps_name(shard)} " in script
        assert "--resources psdist-ps=1" in script
        assert "GPU=" not in script and GPU_LINES[system] not in script
        assert "shards" not in script  # psdist's key never reaches dask-jobqueue
    assert [batch.ps_name(i) for i in range(3)] == ["psdist-ps", "psdist-ps-1", "psdist-ps-2"]
    # shard 0 is exactly the unsharded job (the golden .ps.sh)
    assert scripts[0] == (GOLDEN / f"{name}.ps.sh").read_text()
    kwargs = [cfg.ps_kwargs({"cores": 1}, shard) for shard in range(cfg.shards)]
    assert all("shards" not in k for k in kwargs)
    if system == "slurm":
        assert [re.search(r"#SBATCH -J (\S+)", s).group(1) for s in scripts] == ["psdist-ps", "psdist-ps-1",
                                                                                "psdist-ps-2"]


def test_ps_shards_from_a_yaml_file(tmp_path: Path):
    path = write(tmp_path, "system: slurm\ncluster: {queue: cpu, cores: 1, memory: 1GiB}\n"
                           "ps: {cores: 2, shards: 2}\n")
    cfg = batch.load_cluster_config(path)
    assert cfg.shards == 2
    scripts = batch.ps_job_scripts(path, **LOCAL)
    assert len(scripts) == 2 and all("--cpus-per-task=2" in s and "psdist-ps=1" in s for s in scripts)
    # the data job and job_scripts' PS script (shard 0) are as without shards
    data, ps = batch.job_scripts(path, **LOCAL)
    assert "psdist-ps" not in data and normalise(ps) == normalise(scripts[0])


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True])
def test_bad_ps_shards_are_refused_before_anything_is_submitted(bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fix = r"must be a whole number >= 1 .*write shards: 2 under ps:, or pass ps=\{'shards': 2\}"
    path = write(tmp_path, "system: slurm\ncluster: {queue: debug, cores: 1, memory: 1GiB}\n"
                           f"ps: {{shards: {json.dumps(bad)}}}\n")  # JSON scalars are YAML
    with pytest.raises(ConfigError, match=rf"site\.yaml: ps: shards={re.escape(repr(bad))} {fix}"):
        batch.load_cluster_config(path)
    log = fake_slurm(tmp_path, monkeypatch, "debug*", "(null)")
    with pytest.raises(ConfigError, match=rf"batch_cluster\(ps=...\): ps: shards={re.escape(repr(bad))} {fix}"):
        batch.batch_cluster("slurm-cpu", jobs=1, ps={"shards": bad}, queue="debug", **LOCAL)
    assert calls(log) == []  # not even the partition check ran, let alone sbatch


def test_shards_outside_ps_is_refused_with_the_fix(tmp_path: Path):
    path = write(tmp_path, "system: slurm\nshards: 2\ncluster: {queue: cpu, cores: 1, memory: 1GiB}\n")
    with pytest.raises(ConfigError, match=r"shards: belongs under ps: \(ps: \{shards: 2\}\)"):
        batch.load_cluster_config(path)
    with pytest.raises(ConfigError, match=r"shards=2 is not a dask-jobqueue setting: it belongs under ps:"):
        batch.job_scripts("slurm-cpu", shards=2, **LOCAL)


def test_batch_cluster_submits_one_job_per_shard_and_cancels_them_all(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    log = fake_slurm(tmp_path, monkeypatch, "debug*", "(null)", accept=True)
    cluster, client = batch.batch_cluster("slurm-cpu", jobs=0, ps={"shards": 2}, queue="debug", wait=False,
                                          **LOCAL)
    try:
        assert cluster.ps_shards == 2 and cluster.ps_job is cluster.ps_jobs[0]
        assert [j.job_id for j in cluster.ps_jobs] == ["1", "2"] and not cluster.workers  # no data job
        assert calls(log) == ["sinfo -h -o %P", "sbatch", "sbatch"]
        submitted = [(tmp_path / "submitted" / f"{n}.sh").read_text() for n in (1, 2)]
        assert ["#SBATCH -J psdist-ps\n" in submitted[0], "#SBATCH -J psdist-ps-1\n" in submitted[1]] == [True, True]
        assert all("--resources psdist-ps=1" in s for s in submitted)
    finally:
        client.close()
        cluster.close()
    assert calls(log) == ["scancel 1", "scancel 2"]
