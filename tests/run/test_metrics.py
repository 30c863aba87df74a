"""Tests of psdist.metrics, psdist.run.stopping.EarlyStopping and psdist.run.history.History."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest

from psdist.errors import ConfigError
from psdist.metrics import accuracy, auc, default_metrics, mse, scores
from psdist.run.history import History
from psdist.run.stopping import EarlyStopping


# ----------------------------------------------------------------------------- accuracy
def test_accuracy_argmax() -> None:
    outputs = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 2.0]])
    targets = np.array([1, 0, 1, 2])
    assert accuracy(targets, outputs) == 0.5
    assert accuracy(targets.reshape(-1, 1), outputs) == 0.5


def test_accuracy_single_logit_uses_sign() -> None:
    outputs = np.array([[2.0], [-1.0], [0.5], [-0.2], [0.0]])
    targets = np.array([1, 0, 0, 0, 1])
    # predictions 1, 0, 1, 0, 0 (0 is not > 0)
    assert accuracy(targets, outputs) == pytest.approx(3 / 5)
    assert accuracy(targets, outputs.reshape(-1)) == pytest.approx(3 / 5)


def test_mse() -> None:
    t = np.array([1.0, 2.0, 3.0])
    o = np.array([[1.0], [0.0], [4.0]])
    assert mse(t, o) == pytest.approx((0 + 4 + 1) / 3)


def test_default_metrics() -> None:
    assert default_metrics("int64") == {"accuracy": accuracy}
    assert default_metrics("uint8") == {"accuracy": accuracy}
    assert default_metrics("float32") == {}


# ----------------------------------------------------------------------------- auc
def brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    # coarse scores: many ties, both within and across classes
    s = np.round(rng.normal(y * 0.7, 1.0), 1)
    assert len(np.unique(s)) < n / 2
    got = auc(y, s)
    assert got == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert 0.5 < got < 1.0


def test_auc_two_logit_outputs_use_softmax_score() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    logits = rng.normal(0, 1, (200, 2)) + np.stack([np.zeros(200), y * 1.0], axis=1)
    s = scores(logits)
    e = np.exp(logits)
    np.testing.assert_allclose(s, e[:, 1] / e.sum(axis=1), rtol=1e-12)
    assert auc(y, logits) == pytest.approx(brute_auc(y, s), abs=1e-12)
    # softmax of class 1 is monotone in the logit difference
    assert auc(y, logits) == pytest.approx(brute_auc(y, logits[:, 1] - logits[:, 0]), abs=1e-12)


def test_auc_extremes() -> None:
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert auc(y, np.array([[0.1], [0.2], [0.8], [0.9]])) == 1.0
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))
    assert math.isnan(auc(np.zeros(4), np.arange(4.0)))


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_patience_min_mode() -> None:
    es = EarlyStopping(monitor="val_loss", patience=2)
    assert es.mode == "min"
    assert es.update({"val_loss": 1.0}) is False
    assert es.best == 1.0
    assert es.update({"val_loss": 0.8}) is False
    assert es.best == 0.8 and es.bad_epochs == 0
    assert es.update({"val_loss": 0.9}) is False
    assert es.bad_epochs == 1
    assert es.update({"val_loss": 0.7}) is False  # improvement resets the count
    assert es.bad_epochs == 0
    assert es.update({"val_loss": 0.7}) is False  # equal is not better
    assert es.update({"val_loss": 0.75}) is True
    assert es.bad_epochs == 2
    assert es.reason is not None and "val_loss" in es.reason and "2 epochs" in es.reason


def test_early_stopping_min_delta() -> None:
    es = EarlyStopping(monitor="val_loss", patience=1, min_delta=0.1)
    es.update({"val_loss": 1.0})
    assert es.update({"val_loss": 0.95}) is True  # less than min_delta better
    es2 = EarlyStopping(monitor="val_loss", patience=1, min_delta=0.1)
    es2.update({"val_loss": 1.0})
    assert es2.update({"val_loss": 0.85}) is False


def test_early_stopping_max_mode_inferred() -> None:
    es = EarlyStopping(monitor="val_accuracy", patience=1)
    assert es.mode == "max"
    assert es.update({"val_accuracy": 0.5}) is False
    assert es.update({"val_accuracy": 0.6}) is False
    assert es.best == 0.6
    assert es.update({"val_accuracy": 0.55}) is True
    assert EarlyStopping(monitor="train_loss").mode == "min"
    assert EarlyStopping(monitor="val_auc").mode == "max"
    assert EarlyStopping(monitor="val_loss", mode="max").mode == "max"


def test_early_stopping_target() -> None:
    es = EarlyStopping(monitor="val_accuracy", patience=None, target=0.9)
    assert es.update({"val_accuracy": 0.5}) is False
    assert es.update({"val_accuracy": 0.4}) is False
    assert es.update({"val_accuracy": 0.3}) is False  # patience=None never stops for stagnation
    assert es.update({"val_accuracy": 0.9}) is True  # reaching the target exactly counts
    assert "target" in es.reason
    lo = EarlyStopping(monitor="val_loss", patience=None, target=0.1)
    assert lo.update({"val_loss": 0.2}) is False
    assert lo.update({"val_loss": 0.05}) is True


def test_early_stopping_state_round_trip() -> None:
    es = EarlyStopping(monitor="val_loss", patience=2)
    es.update({"val_loss": 1.0})
    es.update({"val_loss": 1.1})
    other = EarlyStopping(monitor="val_loss", patience=2)
    other.load_state(json.loads(json.dumps(es.state())))
    assert other.best == 1.0 and other.bad_epochs == 1
    assert other.update({"val_loss": 1.2}) is True


def test_early_stopping_unknown_monitor_key() -> None:
    es = EarlyStopping(monitor="val_acc")
    with pytest.raises(ConfigError, match="'val_acc'") as e:
        es.update({"val_loss": 0.3, "val_accuracy": 0.9})
    assert "val_accuracy" in str(e.value)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"mode": "up"}, "mode='up'"), ({"patience": 0}, "patience=0"), ({"min_delta": -1.0}, "min_delta=-1.0")],
)
def test_early_stopping_bad_config(kw, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        EarlyStopping(**kw)


# ----------------------------------------------------------------------------- history
RECORDS = [
    {"epoch": 0, "train_loss": 1.5, "val_loss": 1.2, "samples": 1000},
    {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "samples": 1000, "val_accuracy": 0.75},
]


def test_history_basics() -> None:
    h = History()
    with pytest.raises(IndexError, match="empty"):
        _ = h.last
    for r in RECORDS:
        h.append(r)
    assert len(h) == 2
    assert h[1]["val_accuracy"] == 0.75
    assert h.last is h.records[-1]
    assert h.column("val_accuracy") == [None, 0.75]
    assert [r["epoch"] for r in h] == [0, 1]
    assert repr(h) == "History(2 epochs)"


def test_history_append_copies() -> None:
    h = History()
    rec = {"epoch": 0, "x": 1}
    h.append(rec)
    rec["x"] = 2
    assert h[0]["x"] == 1


def test_history_to_csv(tmp_path) -> None:
    h = History(RECORDS)
    path = tmp_path / "h.csv"
    h.to_csv(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ["epoch", "train_loss", "val_loss", "samples", "val_accuracy"]
    assert rows[0]["val_accuracy"] == ""
    assert rows[1]["val_accuracy"] == "0.75"
    assert float(rows[1]["train_loss"]) == 1.0


def test_history_to_json(tmp_path) -> None:
    h = History(RECORDS)
    path = tmp_path / "h.json"
    text = h.to_json(path)
    assert json.loads(text) == RECORDS
    assert json.loads(path.read_text()) == RECORDS
    assert json.loads(History().to_json()) == []


def test_history_to_pandas() -> None:
    pd = pytest.importorskip("pandas")
    df = History(RECORDS).to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert df.shape == (2, 5)
    assert df["train_loss"].tolist() == [1.5, 1.0]
    assert math.isnan(df["val_accuracy"][0]) and df["val_accuracy"][1] == 0.75
