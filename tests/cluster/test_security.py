"""TLS: certificate helpers, a multi-process cluster on tls://, the parameter server and a whole
training over it, clients without the certificate refused, batch job scripts carrying the
certificate files, and what the psdist dashboard page shows."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import stat
import sys
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch

import psdist
from psdist.cluster.security import (
    as_security,
    security_from_files,
    temporary_security,
    write_temporary_certificate,
)
from psdist.errors import ClusterError, ConfigError
from psdist.hep.models import mlp
from psdist.replica.binding import flatten, spec_of

pytest.importorskip("cryptography")

CE = torch.nn.functional.cross_entropy
MLP_BN = functools.partial(mlp, inputs=20, hidden=32, classes=4, batchnorm=True)
CONNECT_S = 5  # a refused client must fail within this (plus start-up slack)


# ----------------------------------------------------------------------------- the helpers (no cluster)
def test_certificate_files_round_trip(tmp_path):
    files = write_temporary_certificate(tmp_path / "certs")
    assert set(files) == {"ca_file", "cert", "key"} and all(os.path.isabs(p) for p in files.values())
    assert stat.S_IMODE(os.stat(files["key"]).st_mode) == 0o600
    sec = security_from_files(**files)
    assert sec.require_encryption
    for role in ("client", "scheduler", "worker"):
        cfg = sec.get_tls_config_for_role(role)
        assert cfg["ca_file"] == files["ca_file"] and cfg["cert"] == files["cert"] and cfg["key"] == files["key"]
    assert as_security(files).tls_ca_file == files["ca_file"]
    assert as_security(sec) is sec and as_security(None) is None and as_security(False) is None
    assert as_security(True).require_encryption  # a temporary certificate, in memory
    # one file holding certificate and key is fine without key=
    both = tmp_path / "both.pem"
    both.write_text(open(files["cert"]).read() + open(files["key"]).read())
    assert security_from_files(files["ca_file"], both).tls_worker_key is None


def test_bad_certificate_files_name_the_path_and_the_fix(tmp_path):
    files = write_temporary_certificate(tmp_path / "a")
    other = write_temporary_certificate(tmp_path / "b")
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=rf"CA \(ca_file\) file '{re.escape(str(missing))}' does not exist"):
        security_from_files(missing, files["cert"], files["key"])
    with pytest.raises(ConfigError, match="is not a file"):
        security_from_files(files["ca_file"], tmp_path, files["key"])
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(ConfigError, match=rf"'{re.escape(str(junk))}' holds no PEM 'PRIVATE KEY' block"):
        security_from_files(files["ca_file"], files["cert"], junk)
    with pytest.raises(ConfigError, match="holds no PEM 'CERTIFICATE' block"):
        security_from_files(files["key"], files["cert"], files["key"])  # the key given as the CA
    with pytest.raises(ConfigError, match=r"do not go together.*the private key that was made with this certificate"):
        security_from_files(files["ca_file"], files["cert"], other["key"])
    with pytest.raises(ConfigError, match="holds no private key and no key file was given"):
        security_from_files(files["ca_file"], files["cert"])
    with pytest.raises(ConfigError, match=r"missing \['ca_file'\]"):
        as_security({"cert": files["cert"]})
    with pytest.raises(ConfigError, match=r"unknown \['password'\]"):
        as_security({**files, "password": "x"})
    with pytest.raises(ConfigError, match="not understood"):
        as_security("yes")
    # ~ and $VARS are expanded, relative paths made absolute (the job scripts get absolute paths)
    os.environ["PSDIST_TEST_CERTS"] = str(tmp_path / "a")
    try:
        sec = security_from_files("$PSDIST_TEST_CERTS/psdist-cert.pem", files["cert"], files["key"])
    finally:
        del os.environ["PSDIST_TEST_CERTS"]
    assert sec.tls_ca_file == files["ca_file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_key_file(tmp_path):
    files = write_temporary_certificate(tmp_path)
    os.chmod(files["key"], 0)
    with pytest.raises(ConfigError, match=r"cannot be read.*chmod u\+r"):
        security_from_files(**files)


def test_missing_cryptography_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography", None)  # what an environment without it imports
    with pytest.raises(ClusterError, match=r"needs the 'cryptography' package.*pip install cryptography"):
        temporary_security()
    with pytest.raises(ClusterError, match="pip install cryptography"):
        as_security(True)


# ----------------------------------------------------------------------------- batch systems (offline)
def _slurm_config(**changes: Any) -> Any:
    pytest.importorskip("dask_jobqueue")
    from psdist.cluster.batch import load_cluster_config

    return dataclasses.replace(load_cluster_config("slurm-cpu"), **changes)


def _tls_args(script: str) -> dict[str, str]:
    return dict(re.findall(r"--(tls-ca-file|tls-cert|tls-key) (\S+)", script))


def test_batch_config_certificate_files_reach_every_job_script(tmp_path):
    from psdist.cluster.batch import BatchConfig, job_scripts

    files = write_temporary_certificate(tmp_path)
    cfg = _slurm_config()
    raw = {"system": "slurm", "cluster": cfg.cluster, "ps": cfg.ps, "security": files}
    worker, ps = job_scripts(BatchConfig.from_dict(raw, "site.yaml"))
    for script in (worker, ps):
        assert re.search(r"dask_worker tls://\S+", script), script  # the scheduler listens on TLS
        assert "--protocol tls://" in script
        assert _tls_args(script) == {"tls-ca-file": files["ca_file"], "tls-cert": files["cert"], "tls-key": files["key"]}
    assert "--resources psdist-ps=1" in ps

    # a typo fails before anything is submitted, naming the config and the file
    bad = {**raw, "security": {**files, "key": str(tmp_path / "typo.pem")}}
    with pytest.raises(ConfigError, match=r"site\.yaml: TLS private key \(key\) file '.*typo\.pem' does not exist"):
        job_scripts(BatchConfig.from_dict(bad, "site.yaml"))
    with pytest.raises(ConfigError, match="security is given twice"):
        BatchConfig.from_dict({**raw, "cluster": {**cfg.cluster, "security": True}}, "site.yaml")
    with pytest.raises(ConfigError, match=r"must be true .* or a mapping"):
        BatchConfig.from_dict({**raw, "security": "on"}, "site.yaml")


def test_batch_config_temporary_certificate_is_written_to_the_shared_directory(tmp_path):
    from psdist.cluster.batch import job_scripts

    worker, ps = job_scripts(_slurm_config(security=True), shared_temp_directory=str(tmp_path))
    args = _tls_args(worker)
    assert set(args) == {"tls-ca-file", "tls-cert", "tls-key"} and _tls_args(ps) == args
    for path in args.values():  # dask-jobqueue wrote the in-memory certificate there
        assert os.path.dirname(path) == str(tmp_path)


# ----------------------------------------------------------------------------- a cluster on TLS
@pytest.fixture(scope="module")
def tls():
    """Three worker processes on tls:// with a temporary certificate, and the default dashboard."""
    from psdist.cluster import embedded_cluster

    cluster, client = embedded_cluster(workers=2, threads_per_worker=1, security=True)  # dashboard ":0"
    try:
        yield cluster, client
    finally:
        client.close()
        cluster.close()


def test_every_address_is_tls(tls):
    cluster, client = tls
    assert client.scheduler.address.startswith("tls://127.0.0.1:")
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 3 and all(a.startswith("tls://127.0.0.1:") for a in workers)
    assert cluster.security.require_encryption and client.security is cluster.security
    # the dashboard (plain HTTP) was asked for as ":0" but listens on loopback only
    assert {host for host, _ in client.run_on_scheduler(_http_sockets)} == {"127.0.0.1"}


def _http_sockets(dask_scheduler: Any) -> list[tuple[str, int]]:
    return [s.getsockname()[:2] for s in dask_scheduler.http_server._sockets.values()]


def _push_from_a_worker(ps: Any, update: np.ndarray) -> tuple[bool, int]:
    from psdist.core.protocol import Push

    reply = ps.push(Push("remote", 0, update, 8, 0.25)).result(timeout=30)
    return reply.applied, reply.version


def test_parameter_server_over_tls(tls):
    from psdist.cluster import pick_ps_worker
    from psdist.cluster.actor import ParameterServer
    from psdist.core.layout import Layout
    from psdist.optim import SGD
    from psdist.rules import Downpour

    _, client = tls
    model = MLP_BN()
    spec = spec_of(model)
    w0 = flatten(model, spec)
    ps_address, _ = pick_ps_worker(client)
    future = client.submit(ParameterServer, Layout.of({"model": spec}).to_dict(), w0, {"model": SGD(lr=0.5)},
                           Downpour(), 2, actor=True, workers=[ps_address], pure=False)
    try:
        ps = future.result(timeout=30)
        first = ps.pull("client", -1).result(timeout=30)
        assert first.version == 0 and np.array_equal(first.weights, w0)
        g = np.linspace(-1, 1, w0.size).astype(np.float32)
        data_worker = sorted(set(client.scheduler_info()["workers"]) - {ps_address})[0]
        applied, version = client.submit(_push_from_a_worker, ps, g, workers=[data_worker], pure=False).result(30)
        assert applied and version == 1
        after = ps.pull("client", 0).result(timeout=30)
        expected = w0.copy()
        n = spec.n_params
        expected[:n] -= np.float32(0.5) * g[:n]  # parameters through SGD,
        expected[n:] += g[n:]  # buffer changes added as they are
        np.testing.assert_array_equal(after.weights, expected)
        assert ps.metrics().result(timeout=30)["workers"]["remote"]["applied"] == 1
    finally:
        client.cancel([future])


def _scheduler_clients(dask_scheduler: Any) -> list[str]:
    return sorted(dask_scheduler.clients)


@pytest.mark.parametrize("how", ["no credentials", "another certificate", "plain tcp"])
def test_a_client_without_the_certificate_is_refused(tls, how):
    from distributed import Client, default_client
    from distributed.security import Security

    _, client = tls
    before = client.run_on_scheduler(_scheduler_clients)
    address = client.scheduler.address
    kwargs: dict[str, Any] = {}
    if how == "another certificate":
        kwargs["security"] = Security.temporary()  # valid TLS, but not signed by this cluster's CA
    elif how == "plain tcp":
        address = address.replace("tls://", "tcp://")
    t0 = time.monotonic()
    # set_as_default=False: a Client that fails to connect stays the process's default client
    # (until garbage-collected), and actor handles made later would bind to it
    with pytest.raises((OSError, TypeError)) as info:  # OSError: CommClosedError, TimeoutError
        Client(address, timeout=CONNECT_S, set_as_default=False, **kwargs).close()
    elapsed = time.monotonic() - t0
    assert elapsed < CONNECT_S + 10
    message = str(info.value)
    expected = {
        "no credentials": "TLS expects a `ssl_context`",  # refused by the client itself: no certificate
        "another certificate": "TLS certificate does not match",
        "plain tcp": "",  # the server drops the connection at the handshake
    }[how]
    assert expected in message
    assert client.run_on_scheduler(_scheduler_clients) == before  # nobody got in
    assert client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3  # the cluster is unharmed
    assert default_client() is client


@pytest.fixture(scope="module")
def trained(tls, blob_data):
    """A real training over TLS (3 epochs on the blobs dataset), shared by the tests below."""
    _, client = tls
    trainer = psdist.Trainer(
        MLP_BN, CE, blob_data, psdist.optim.SGD(lr=0.05, momentum=0.9),
        max_staleness=4, batch_size=64, push_every=2, client=client, seed=3,
    )
    t0 = time.perf_counter()
    history = trainer.fit(epochs=3)
    return trainer, history, time.perf_counter() - t0


def test_training_over_tls_reaches_accuracy(trained, blob_data):
    trainer, history, seconds = trained
    assert trainer.ps_address.startswith("tls://")
    assert history.last["val_accuracy"] >= 0.95
    for rec in history:
        assert rec["chunks"] == 8 and rec["samples"] == blob_data.describe().train_rows
    assert trainer.version == sum(r["pushes_applied"] for r in history)
    print(f"\nTLS training: 3 epochs in {seconds:.1f} s, val_accuracy {history.last['val_accuracy']:.4f}")


# ----------------------------------------------------------------------------- the dashboard page
def _on_scheduler_http(dask_scheduler: Any) -> dict[str, Any]:
    from bokeh.server.server import BokehTornado

    apps = [a for a in dask_scheduler.http_application.applications if isinstance(a, BokehTornado)]
    return {
        "port": dask_scheduler.http_server.port,
        "bokeh_apps": [bool(getattr(a, "_psdist_page", False)) for a in apps],
    }


def _document_values(doc: Any) -> tuple[list[float], list[str], dict[str, list[str]]]:
    """Every number and string the browser receives, and each data source's columns."""
    from bokeh.models import ColumnDataSource

    numbers: list[float] = []
    strings: list[str] = []
    sources: dict[str, list[str]] = {}

    def walk(v: Any) -> None:
        if isinstance(v, (bool, type(None))):
            return
        if isinstance(v, (int, float, np.integer, np.floating)):
            numbers.append(float(v))
        elif isinstance(v, str):
            strings.append(v)
        elif isinstance(v, np.ndarray):
            for x in v.ravel().tolist():
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    for model in doc.models:
        if isinstance(model, ColumnDataSource):
            sources[model.name or "?"] = sorted(model.data)
            walk(dict(model.data))
        for prop in ("text", "options", "labels", "title", "value"):
            if prop in model.properties():
                walk(getattr(model, prop))
    return numbers, strings, sources


def _looks_like_weights_or_data(numbers: list[float], secret: np.ndarray) -> set[float]:
    """Values of the float32 array ``secret`` found exactly among ``numbers``.

    Integers are left out (counters would match them); a number matches only if it is exactly
    that float32 value, so times and float64 figures do not match by chance. A float32 loss may
    still coincide with one of 100k data values now and then: a leak shows as many values.
    """
    secret = secret[np.isfinite(secret) & (secret != np.round(secret))]
    values = set(secret.astype(np.float64).tolist())
    return {x for x in numbers if x in values}


LEAK = 8  # matching values that count as a leak (a weight vector has hundreds, a data row 20)


PATH_LIKE = re.compile(r"(?<![\w:/])(?:~|\.{0,2})/[\w.\-]+(?:/[\w.\-]*)+")


def test_dashboard_page_is_served_by_the_dask_dashboard_and_shows_only_the_feed(tls, trained, blob_data):
    from bokeh.client import pull_session

    from psdist.dashboard import PATH, install
    from psdist.run.events import TOPIC

    _, client = tls
    trainer, _, _ = trained
    link = client.dashboard_link
    assert link.startswith("http://127.0.0.1:")  # the dashboard is HTTP, on loopback (docs/security.md)
    url = trainer.dashboard_url
    assert url is not None and url == install(client) + f"?run={trainer.run_id}"

    # one HTTP server: the same host and port as Dask's own pages, the page an extra Bokeh app in its routing
    assert urlsplit(url).netloc == urlsplit(link).netloc
    assert urlsplit(url).path == PATH
    info = client.run_on_scheduler(_on_scheduler_http)
    assert urlsplit(link).port == info["port"] and sorted(info["bokeh_apps"]) == [False, True]
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
    assert resp.status == 200 and "<title>psdist</title>" in body
    with urllib.request.urlopen(link, timeout=10) as resp:
        assert resp.status == 200

    # what the browser gets: the document of a real Bokeh session
    with pull_session(url=url.split("?")[0], arguments={"run": trainer.run_id}) as session:
        numbers, strings, sources = _document_values(session.document)
    assert sources["psdist-summary"] and all(name.startswith("psdist-") for name in sources)

    # and what the page is made from: the psdist events the scheduler received
    events = [msg for _, msg in client.get_events(TOPIC) if msg.get("run") == trainer.run_id]
    kinds = {m["kind"] for m in events}
    assert kinds <= {"start", "server", "chunk", "epoch", "lr", "end"} and {"start", "server", "end"} <= kinds
    ev_numbers, ev_strings, _ = _document_values_of(events)

    model = trainer.model()
    weights = flatten(model, spec_of(model))
    g = blob_data.open_group()
    rows = np.concatenate([g["x"][:].ravel(), g["x_val"][:].ravel()])
    assert len(_looks_like_weights_or_data(weights[:8].tolist(), weights)) >= LEAK  # the check sees them
    assert len(_looks_like_weights_or_data(rows[:8].tolist(), rows)) >= LEAK
    for where, nums in (("page", numbers), ("events", ev_numbers)):
        found = _looks_like_weights_or_data(nums, weights)
        assert len(found) < LEAK, f"weights on the {where}: {sorted(found)}"
        found = _looks_like_weights_or_data(nums, rows)
        assert len(found) < LEAK, f"training data on the {where}: {sorted(found)}"

    nums_of = {"page": numbers, "events": ev_numbers}
    # addresses: only the cluster's own (which Dask's pages show too); no file path (the run
    # names its data store by the store's name only)
    cluster_addresses = set(client.scheduler_info()["workers"])
    for where, texts in (("page", strings), ("events", ev_strings)):
        addresses = {a for s in texts for a in re.findall(r"\b(?:tls|tcp)://[\w.\-]+:\d+", s)}
        assert addresses and addresses <= cluster_addresses, where
        paths = {p for s in texts for p in PATH_LIKE.findall(s)}
        assert not paths, f"paths on the {where}: {paths}"
        print(f"\n{where}: {len(nums_of[where])} numbers, {len(texts)} strings, addresses {sorted(addresses)}, "
              f"paths {sorted(paths)}")


def _document_values_of(events: list[dict[str, Any]]) -> tuple[list[float], list[str], dict[str, list[str]]]:
    numbers: list[float] = []
    strings: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, bool) or v is None:
            return
        if isinstance(v, (int, float)):
            numbers.append(float(v))
        elif isinstance(v, str):
            strings.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(events)
    return numbers, strings, {}


@pytest.mark.slow
def test_trainer_security_true_starts_its_own_tls_cluster(blob_data):
    """No client given: Trainer(security=True) makes a temporary certificate for its LocalCluster."""
    trainer = psdist.Trainer(MLP_BN, CE, blob_data, psdist.optim.SGD(lr=0.05, momentum=0.9), max_staleness=4,
                             batch_size=64, workers=1, seed=3, security=True)
    history = trainer.fit(epochs=2)
    assert trainer.ps_address.startswith("tls://")
    assert history.last["val_accuracy"] >= 0.95


def test_trainer_refuses_bad_certificate_files_before_any_cluster(blob_data, tmp_path):
    with pytest.raises(psdist.ConfigError, match=r"missing\.pem"):
        psdist.Trainer(MLP_BN, CE, blob_data, security={"ca_file": str(tmp_path / "missing.pem"),
                                                         "cert": str(tmp_path / "missing.pem")})
