"""The dashboard page: feed folding (pure), Bokeh components (no server), and the page served live."""

from __future__ import annotations

import math
import time
import urllib.request
from typing import Any

import pytest
from bokeh.document import Document

from psdist.dashboard import PATH, DashboardPlugin, Runs, install, page_url
from psdist.dashboard.page import FOLLOW, RunPage, document
from psdist.dashboard.plugin import _join
from psdist.dashboard.series import Series, as_float, as_int
from psdist.run.events import TOPIC, RecoveryEvent, ServerSnapshot, StartEvent, event


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def server(run: str, t: float, version: int, applied: int, rejected: int, samples: int, loss_sum: float,
           workers: dict[str, int], active: tuple[str, ...] = (), lr: float = 0.1) -> dict[str, Any]:
    """A "server" message as the PS publishes it (ServerState.metrics() plus kind/run/time)."""
    table = {
        w: {"pushes": n // 32, "applied": n // 32, "rejected": 0, "samples": n, "last_push": t - 0.5,
            "last_loss": 0.5, "info": {"host": "node1", "device": "cpu", "threads": 2, "name": str(i)}}
        for i, (w, n) in enumerate(workers.items())
    }
    msg = event("server", run, version=version, applied=applied, rejected={"stale": rejected} if rejected else {},
                samples_applied=samples, samples_rejected=0, loss_sum=loss_sum, staleness_hist=[version, 2, 1],
                lr=lr, staleness_mean=0.4, staleness_max=2, active=list(active), clock_gap_max=0, waits=0,
                evicted=0, workers=table, time=t)
    msg["time"] = t
    return msg


def at(msg: dict[str, Any], t: float) -> dict[str, Any]:
    return {**msg, "time": t}


def feed(runs: Runs, run: str = "r1", t0: float = 1000.0) -> None:
    """A short made-up training: start, three server snapshots, chunks, an epoch, an lr change."""
    config = {"rule": {"name": "SSP", "bound": 2}, "batch_size": 32, "optimizers": {"model": {"name": "sgd", "lr": 0.1}},
              "parameter_server": "tcp://w2:1 (a worker that also trains); 2 worker(s) train", "training_workers": 2,
              "devices": "0: cuda:0, 1: cuda:0", "precision": "bf16-mixed"}
    runs.consume(at(event("start", run, name="demo", ps="tcp://ps:1", epochs=3, config=config), t0))
    runs.consume(server(run, t0 + 1, version=10, applied=10, rejected=0, samples=320, loss_sum=320 * 1.2,
                        workers={"tcp://w1:1": 160, "tcp://w2:1": 160}, active=("tcp://w1:1", "tcp://w2:1")))
    runs.consume(server(run, t0 + 2, version=30, applied=30, rejected=4, samples=960, loss_sum=320 * 1.2 + 640 * 0.8,
                        workers={"tcp://w1:1": 480, "tcp://w2:1": 480}, active=("tcp://w1:1",)))
    runs.consume(at(event("chunk", run, epoch=1, chunk=0, worker="tcp://w1:1", samples=512, loss=0.9,
                          compute_s=1.0, comm_s=0.5, wait_s=0.0, read_s=0.5, done=1, total=4), t0 + 2.1))
    runs.consume(at(event("epoch", run, record={"epoch": 1, "train_loss": 0.9, "val_loss": 0.7, "val_accuracy": 0.8,
                                                 "val_auc": 0.9, "version": 30, "lr": 0.1}), t0 + 2.5))
    runs.consume(at(event("lr", run, lr=0.05), t0 + 2.6))
    runs.consume(server(run, t0 + 4, version=50, applied=50, rejected=4, samples=1600, loss_sum=320 * 1.2 + 640 * 0.8 + 640 * 0.5,
                        workers={"tcp://w1:1": 800, "tcp://w2:1": 800}, active=("tcp://w1:1",), lr=0.05))


# ---------------------------------------------------------------------- state (pure)
def test_series_thins_instead_of_forgetting_the_beginning():
    s = Series(("x", "y"), maxlen=8)
    for i in range(100):
        s.append(x=i, y=2 * i)
    d = s.data()
    assert len(s) < 8 and d["x"][0] == 0 and d["x"] == sorted(d["x"]) and d["x"][-1] > 80
    assert d["y"] == [2 * x for x in d["x"]]
    s2 = Series(("a", "b"))
    s2.append(a=1)
    assert math.isnan(s2.data()["b"][0])
    assert as_float(None) != as_float(None) and as_int(None, 7) == 7 and as_int(3.0) == 3 and as_int("x") == 0


def test_feed_folds_into_rates_losses_histogram_lr_and_worker_rows():
    clock = Clock(1005.0)
    runs = Runs(clock=clock)
    feed(runs)
    r = runs.get("r1")
    assert r is not None and r.title == "demo (r1)" and r.ps == "tcp://ps:1" and r.config["batch_size"] == 32
    assert (r.epochs_planned, r.epoch, r.chunks) == (3, 1, (1, 4))
    assert (r.version, r.applied, r.rejected_total, r.samples_applied) == (50, 50, 4, 1600)
    p = r.pushes.data()
    assert p["t"] == [2.0, 4.0]
    assert p["applied"] == [20.0, 10.0] and p["rejected"] == [4.0, 0.0]
    loss = r.loss.data()
    assert loss["version"] == [30, 50] and loss["loss"] == pytest.approx([0.8, 0.5])
    assert r.staleness_hist == [50, 2, 1]
    assert r.lr == 0.05 and r.lr_series.data()["lr"] == [0.1, 0.05]
    rates = r.worker_rates["tcp://w1:1"].data()
    assert rates["samples_per_s"] == [320.0, 160.0]
    assert r.metric_names() == ["val_accuracy", "val_auc"] and r.metric_series("val_auc") == ([1.0], [0.9])
    assert r.epochs.data()["val_loss"] == [0.7] and r.chunk_loss.data()["loss"] == [0.9]
    rows = {row["worker"]: row for row in r.worker_rows()}
    w1, w2 = rows["tcp://w1:1"], rows["tcp://w2:1"]
    assert (w1["state"], w2["state"]) == ("training", "idle")
    assert w1["chunks"] == 1 and w1["chunk_samples_per_s"] == 256.0 and w2["chunks"] == 0
    assert (w1["host"], w1["device"], w1["threads"], w1["samples"]) == ("node1", "cpu", 2.0, 800)
    # last push 0.5 s before the snapshot (PS clock), the snapshot arrived 0 s ago (local clock)
    assert w1["last_push_age"] == pytest.approx(0.5)
    clock.t += 3
    assert r.worker_rows()[0]["last_push_age"] == pytest.approx(3.5)
    runs.consume(event("end", "r1", reason="completed"))
    assert r.status == "ended" and r.end_reason == "completed"
    assert {row["state"] for row in r.worker_rows()} == {"done"}


def test_runs_drop_junk_keep_runs_apart_and_bound_their_number(caplog):
    runs = Runs(max_runs=2)
    junk = [None, 3, {"kind": "server"}, {"run": 5, "kind": "x"}, {"run": "r"},
            {"kind": "server", "run": "a", "version": "junk"}, {"kind": "server", "run": "a", "version": 1, "rejected": [1]},
            {"kind": "server", "run": "a", "version": 2, "workers": {"w": "junk"}}, {"kind": "chunk", "run": "a"}]
    with caplog.at_level("DEBUG", logger="psdist.dashboard.state"):
        assert [runs.consume(m) for m in junk] == [None] * len(junk)
    assert len(runs) == 0  # nothing half-read: no run from a message that makes no record
    assert runs.dropped == {"NoneType": 1, "int": 1, "server": 4, "x": 1, "None": 1, "chunk": 1}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [  # the reason once per kind, the rest at debug level
        "psdist dashboard: dropping a feed message: a feed message is a mapping with 'kind' and 'run', not None",
        "psdist dashboard: dropping a feed message: a feed message is a mapping with 'kind' and 'run', not 3",
        "psdist dashboard: dropping a feed message: 'server' message without a run id (run=None)",
        "psdist dashboard: dropping a feed message: 'x' message without a run id (run=5)",
        "psdist dashboard: dropping a feed message: message of run 'r' without a kind (kind=None)",
        "psdist dashboard: dropping a feed message: 'chunk' message of run 'a' lacks the required field(s) "
        "['epoch', 'chunk', 'worker', 'samples']",
    ]
    assert runs.consume({"kind": "whatever", "run": "a"}) is None and "whatever" not in runs.dropped  # a newer kind
    runs.consume({**event("server", "a", version=3), "from_a_newer_ps": [1, 2]})  # extra fields are fine
    assert runs.get("a").version == 3
    runs.consume(event("start", "b", name="second"))
    assert runs.latest().run == "b"
    runs.consume(event("end", "a", reason="completed"))
    runs.consume(event("start", "c"))
    assert runs.ids() == ["b", "c"]  # the ended run went first
    runs.consume(event("end", "c", reason="completed"))
    assert runs.latest().run == "b"  # the newest *running* one


def test_typed_records_fold_as_their_messages_do_and_a_recovery_moves_the_ps():
    records = [
        StartEvent(run="r", time=1000.0, name="demo", ps="tcp://ps:1", epochs=2),
        ServerSnapshot(run="r", time=1001.0, version=10, applied=10, samples_applied=320, loss_sum=320.0),
        RecoveryEvent(run="r", time=1002.0, error="ParameterServerLost('gone')", version=8, ps="tcp://w:2"),
        ServerSnapshot(run="r", time=1003.0, version=12, applied=12, samples_applied=384, loss_sum=352.0),
    ]
    typed, sent = Runs(clock=Clock()), Runs(clock=Clock())
    for record in records:
        typed.consume(record)
        sent.consume(record.to_message())
    for r in (typed.get("r"), sent.get("r")):
        assert (r.ps, r.recoveries, r.version, r.seq, r.epochs_planned) == ("tcp://w:2", 1, 12, 4, 2)
        assert r.loss.data()["loss"] == [0.5] and r.server == records[-1]


def test_tuples_from_msgpack_count_as_lists():
    # worker events reach the scheduler through msgpack, which turns lists into tuples
    msg = server("r", 10.0, 5, 5, 0, 100, 50.0, {"w": 100}, active=("w",))
    runs = Runs()
    runs.consume({**msg, "staleness_hist": (3, 2), "active": ("w",)})
    assert runs.get("r").staleness_hist == [3, 2] and runs.get("r").active == {"w"}


def shard_snapshot(run: str, shard: int, t: float, version: int, applied: int, rejected: int, size: int,
                   samples: int, staleness_mean: float, shards: int = 2) -> dict[str, Any]:
    """One shard's "server" message: its own counters and clock, its place added as the scheduler does."""
    table = {"tcp://w1:1": {"pushes": applied + rejected, "applied": applied, "rejected": rejected, "samples": samples}}
    msg = event("server", run, version=version, applied=applied, rejected={"stale": rejected} if rejected else {},
                samples_applied=samples, staleness_mean=staleness_mean, workers=table, shard=shard, shards=shards,
                size=size)
    return {**msg, "time": t, "worker": f"tcp://ps{shard}:1"}


def sharded_feed(runs: Runs, run: str = "s") -> None:
    """Two shards whose clocks are 100 s apart; shard 1 reports first, and once out of order."""
    runs.consume(at(event("start", run, name="sharded"), 1000.0))
    runs.consume(shard_snapshot(run, 1, 1101.5, version=9, applied=9, rejected=0, size=400, samples=288,
                                staleness_mean=0.5))
    runs.consume(shard_snapshot(run, 0, 1001.0, version=10, applied=10, rejected=0, size=600, samples=320,
                                staleness_mean=0.25))
    runs.consume(shard_snapshot(run, 0, 1003.0, version=30, applied=30, rejected=4, size=600, samples=960,
                                staleness_mean=0.4))
    runs.consume(shard_snapshot(run, 1, 1102.5, version=29, applied=29, rejected=3, size=400, samples=928,
                                staleness_mean=0.5))
    runs.consume(shard_snapshot(run, 1, 1102.0, version=20, applied=20, rejected=1, size=400, samples=640,
                                staleness_mean=0.5))  # older than the last one: changes nothing


def test_each_shard_keeps_its_own_load_and_only_shard_0_makes_the_runs_figures():
    runs = Runs(clock=Clock())
    sharded_feed(runs)
    r = runs.get("s")
    assert r is not None and r.sharded and r.shard_count == 2
    # the run's figures: shard 0's snapshots, differenced only against each other
    assert (r.version, r.applied, r.rejected_total, r.samples_applied) == (30, 30, 4, 960)
    assert r.pushes.data() == {"t": [3.0], "applied": [10.0], "rejected": [2.0]}
    assert r.server is not None and r.server.shard == 0 and r.server.time == 1003.0
    assert r.ps == "tcp://ps0:1" and r.workers["tcp://w1:1"]["samples"] == 960
    s0, s1 = r.shards
    assert (s0.shard, s0.worker, s0.size, s0.version, s0.applied, s0.rejected) == (0, "tcp://ps0:1", 600, 30, 30, 4)
    assert s0.pushes_per_s == 12.0 and s0.mb_per_s == pytest.approx(12 * 600 * 4 / 1e6)  # (34 - 10) pushes in 2 s
    assert s0.staleness_mean == 0.4 and s0.time == 1003.0
    assert (s1.shard, s1.worker, s1.size, s1.version, s1.applied, s1.rejected) == (1, "tcp://ps1:1", 400, 29, 29, 3)
    assert s1.pushes_per_s == 23.0 and s1.mb_per_s == pytest.approx(23 * 400 * 4 / 1e6)  # its own clock: 1 s
    assert s1.row()["mb_per_s"] == s1.mb_per_s and s1.row()["worker"] == "tcp://ps1:1"
    # a restarted shard counts from a lower point: no negative rate
    runs.consume(shard_snapshot("s", 1, 1104.5, version=25, applied=25, rejected=0, size=400, samples=800,
                                staleness_mean=0.5))
    assert r.shards[1].pushes_per_s == 0.0 and r.shards[1].version == 25 and r.version == 30
    runs.consume({**shard_snapshot("s", 1, 1105.0, 26, 26, 0, 400, 832, 0.5), "shard": -1})  # junk: ignored
    assert len(r.shards) == 2 and r.shards[1].version == 25


def test_a_single_server_is_one_shard_of_unknown_size():
    runs = Runs(clock=Clock(1005.0))
    feed(runs)
    r = runs.get("r1")
    assert not r.sharded and r.shard_count == 1 and r.server is not None and r.server.shards == 1
    (row,) = r.shards
    assert (row.shard, row.worker, row.size, row.version, row.applied, row.rejected) == (0, "", 0, 50, 50, 4)
    assert row.pushes_per_s == 10.0 and math.isnan(row.mb_per_s)  # (54 - 34) pushes in 2 s; size not said


def test_out_of_order_snapshot_does_not_rewind_the_counters():
    runs = Runs()
    runs.consume(server("r", 10.0, 5, 5, 0, 100, 50.0, {"w": 100}))
    runs.consume(server("r", 12.0, 9, 9, 0, 200, 90.0, {"w": 200}))
    runs.consume(server("r", 11.0, 7, 7, 0, 150, 70.0, {"w": 150}))
    r = runs.get("r")
    assert r.version == 9 and len(r.pushes) == 1


# ---------------------------------------------------------------------- components (no server)
def data(doc_or_page: Any, name: str) -> dict[str, list[Any]]:
    model = doc_or_page.get_model_by_name(name)
    return dict(model.data)


def test_components_show_the_run_from_the_feed():
    clock = Clock(1005.0)
    runs = Runs(clock=clock)
    doc = Document()
    page = document(runs, doc)
    assert data(doc, "psdist-summary") == {k: [] for k in page.status.SUMMARY}
    assert "No training" in doc.get_model_by_name("psdist-status").text
    feed(runs)
    page.update()
    assert data(doc, "psdist-summary")["version"] == [50] and data(doc, "psdist-summary")["lr"] == [0.05]
    assert data(doc, "psdist-pushes")["applied"] == [20.0, 10.0]
    assert data(doc, "psdist-loss")["x"] == [30, 50]
    assert data(doc, "psdist-epochs")["val_loss"] == [0.7]
    assert data(doc, "psdist-staleness") == {"tau": [0, 1, 2], "count": [50, 2, 1]}
    assert data(doc, "psdist-metrics")["metric"] == ["accuracy", "auc"]
    rates = data(doc, "psdist-worker-rates")
    assert rates["worker"] == ["0", "1"] and rates["ys"][0] == [320.0, 160.0]
    lr = data(doc, "psdist-lr")  # first seen at version 10, set by hand at 30, in force up to 50
    assert lr["version"] == [10, 30, 50] and lr["lr"] == [0.1, 0.05, 0.05] and lr["t"] == pytest.approx([1, 2.6, 2.6])
    table = data(doc, "psdist-workers")
    assert table["state"] == ["training", "idle"] and table["device"] == ["cpu", "cpu"] and table["chunks"] == [1, 0]
    redraws = page.workers.root.tags
    page.update()
    assert page.workers.root.tags == redraws  # nothing new, nothing sent
    clock.t += 1
    page.update()  # the age of the last push moved on: the table is told to redraw (BokehJS quirk)
    assert page.workers.root.tags != redraws and data(doc, "psdist-workers")["last_push_age"][0] == pytest.approx(1.5)
    text = doc.get_model_by_name("psdist-status").text
    assert "demo (r1)" in text and "stale: 4" in text and "1 of 3, chunk 1 of 4" in text
    assert "SSP(bound=2)" in text and "model: sgd(lr=0.1)" in text
    assert "parameter server</th><td>tcp://w2:1 (a worker that also trains)" in text  # where the PS lives
    assert "training slots</th><td>2" in text
    assert "devices</th><td>0: cuda:0, 1: cuda:0" in text and "precision</th><td>bf16-mixed" in text
    # the loss against time instead of version
    page.loss.axis.active = 1
    page.update()
    assert data(doc, "psdist-loss")["x"] == [2.0, 4.0]
    assert doc.get_model_by_name("psdist-loss-figure").xaxis[0].axis_label.startswith("time")
    assert len(doc.callbacks.session_callbacks) == 1  # the periodic refresh
    # one server: no shard table (hidden and empty), the page as it was
    assert not page.shards.root.visible and data(doc, "psdist-shards")["shard"] == []
    assert data(doc, "psdist-summary")["shards"] == [1] and "server shards" not in text


def test_a_sharded_run_shows_one_table_row_per_shard():
    runs = Runs(clock=Clock())
    doc = Document()
    page = document(runs, doc)
    sharded_feed(runs)
    page.update()
    assert doc.get_model_by_name("psdist-shards-panel").visible
    table = data(doc, "psdist-shards")
    assert table["shard"] == [0, 1] and table["worker"] == ["tcp://ps0:1", "tcp://ps1:1"]
    assert table["size"] == [600, 400] and table["pushes_per_s"] == [12.0, 23.0]
    assert table["mb_per_s"] == pytest.approx([0.0288, 0.0368])
    assert data(doc, "psdist-summary")["shards"] == [2]
    assert "server shards</th><td>2" in doc.get_model_by_name("psdist-status").text
    assert len(data(doc, "psdist-pushes")["t"]) == 1  # the run's rate: shard 0 alone


def test_page_follows_the_newest_run_or_the_one_asked_for():
    runs = Runs()
    follow, pinned = RunPage(runs), RunPage(runs, run="r2")
    feed(runs, "r1")
    for p in (follow, pinned):
        p.update()
    assert follow.status.source.data["run"] == ["r1"]
    assert pinned.status.source.data["run"] == [] and ("r2", "r2 [waiting for it to report]") in pinned.select.options
    feed(runs, "r2", t0=2000.0)
    for p in (follow, pinned):
        p.update()
    assert follow.status.source.data["run"] == ["r2"] and pinned.status.source.data["run"] == ["r2"]
    follow.select.value = "r1"  # the browser picks a run
    assert follow.selected == "r1" and follow.status.source.data["run"] == ["r1"]
    assert follow.pushes.source.data["t"] == [2.0, 4.0]
    follow.select.value = FOLLOW
    assert follow.status.source.data["run"] == ["r2"]


def test_url_of_the_page_from_the_dashboard_link():
    assert _join("http://h:8787/status", "/psdist") == "http://h:8787/psdist"
    assert _join("http://h:8787/status", "/dask/psdist") == "http://h:8787/dask/psdist"
    assert _join("http://h:8787/dask/status", "/dask/psdist") == "http://h:8787/dask/psdist"
    assert _join("https://hub/user/me/proxy/8787/status", "/psdist") == "https://hub/user/me/proxy/8787/psdist"


# ---------------------------------------------------------------------- served by a real scheduler
def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def runs_on_scheduler(dask_scheduler: Any) -> dict[str, tuple[int, str, float | None]]:
    runs = dask_scheduler.plugins[DashboardPlugin.name].runs
    return {r: (s.version, s.status, s.lr) for r, s in runs.runs.items()}


def publish_from_worker(dask_worker: Any) -> None:
    dask_worker.log_event(TOPIC, server("live", time.time(), 7, 7, 1, 224, 100.0, {dask_worker.address: 224}))


@pytest.fixture(scope="module")
def dashboard_client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        yield client


def test_page_is_served_in_the_running_dashboard(dashboard_client):
    from bokeh.client import pull_session

    client = dashboard_client
    client.log_event(TOPIC, event("start", "live", name="before install"))  # replayed on install
    base = install(client)
    assert base is not None and base.endswith(PATH) and base.startswith(client.dashboard_link.rsplit("/", 1)[0])
    client.run(publish_from_worker)
    wait_for(lambda: client.run_on_scheduler(runs_on_scheduler).get("live", (0,))[0] == 7)
    # (worker and client events take different roads to the scheduler: one at a time here)
    client.log_event(TOPIC, event("lr", "live", lr=0.02))
    wait_for(lambda: client.run_on_scheduler(runs_on_scheduler)["live"][2] == 0.02)
    assert install(client) == base  # idempotent: the same plugin, its history kept
    assert client.run_on_scheduler(runs_on_scheduler)["live"] == (7, "running", 0.02)

    url = page_url(client, "live")
    assert url == f"{base}?run=live"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
    assert resp.status == 200 and "<title>psdist</title>" in body and "bokeh" in body.lower()
    with urllib.request.urlopen(client.dashboard_link, timeout=10) as resp:
        assert resp.status == 200  # Dask's own pages still answer

    # a Bokeh client session over the websocket: the document the browser would get
    with pull_session(url=base, arguments={"run": "live"}) as session:
        doc = session.document
        summary = doc.get_model_by_name("psdist-summary").data
        assert summary["run"] == ["live"] and summary["version"] == [7] and summary["lr"] == [0.02]
        assert doc.get_model_by_name("psdist-staleness").data["count"] == [7, 2, 1]
        assert doc.get_model_by_name("psdist-workers").data["device"] == ["cpu"]
        assert "before install" in doc.get_model_by_name("psdist-status").text


def test_no_page_without_a_dashboard(client):
    # the shared cluster runs without a dashboard (its HTTP server still answers /health)
    assert install(client) is None
    assert page_url(client, "any") is None


def test_preload_serves_the_page_under_the_http_prefix():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0",
                      scheduler_kwargs={"preload": ["psdist.dashboard"], "http_prefix": "/dask"}) as cluster, \
            Client(cluster) as client:
        path = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[DashboardPlugin.name].path)
        assert path == "/dask/psdist"
        link = install(client)
        assert link is not None and link.endswith(f":{cluster.scheduler.http_server.port}/dask/psdist")
        # in-process schedulers link to the host's address; ask the loopback one it listens on
        url = f"http://127.0.0.1:{cluster.scheduler.http_server.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and "<title>psdist</title>" in resp.read().decode()
        # a plugin registered again (after unregistering) replaces the page, never doubles it
        client.unregister_scheduler_plugin(DashboardPlugin.name)
        assert install(client) == link
        assert client.run_on_scheduler(psdist_pages) == 1
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200


def psdist_pages(dask_scheduler: Any) -> int:
    return sum(getattr(a, "_psdist_page", False) for a in dask_scheduler.http_application.applications)
