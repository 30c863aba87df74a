"""Tests of psdist.run.checkpoint: round trip, damage detection, no pickle, atomic replacement."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from psdist.errors import CheckpointError
from psdist.run.checkpoint import FORMAT, read_checkpoint, write_checkpoint

META = {
    "version": 17,
    "epoch": 3,
    "note": "héllo",
    "history": [{"epoch": 0, "val_loss": 0.5}, {"epoch": 1, "val_loss": float("nan")}],
    "nested": {"a": [1, 2, 3], "b": None, "c": True},
}


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "weights": rng.standard_normal(1000).astype(np.float32),
        "optim/model/momentum": rng.standard_normal(1000).astype(np.float32),
        "ints": np.arange(12, dtype=np.int64).reshape(3, 4),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], dtype=np.float32),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    }


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".psdist-ckpt-"))


def test_round_trip_is_bit_identical(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    arrays = sample_arrays()
    write_checkpoint(path, META, arrays)
    meta, back = read_checkpoint(path)
    assert back.keys() == arrays.keys()
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype, name
        assert back[name].shape == a.shape, name
        assert back[name].tobytes(order="C") == a.tobytes(order="C"), name
    assert meta["format"] == FORMAT
    assert set(meta["arrays"]) == set(arrays)
    for key in ("version", "epoch", "note", "nested"):
        assert meta[key] == META[key]
    assert meta["history"][0] == META["history"][0]
    assert np.isnan(meta["history"][1]["val_loss"])
    assert leftovers(tmp_path) == []


def test_zero_dimensional_array_keeps_its_shape(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    write_checkpoint(path, {}, {"scalar": np.array(3.5, dtype=np.float64)})
    _, back = read_checkpoint(path)
    assert back["scalar"].shape == ()
    assert back["scalar"] == 3.5


def test_write_creates_directories_and_overwrites(tmp_path) -> None:
    path = tmp_path / "deep" / "er" / "run.ckpt"
    write_checkpoint(path, {"n": 1}, {"a": np.zeros(3, np.float32)})
    write_checkpoint(path, {"n": 2}, {"a": np.ones(3, np.float32)})
    meta, arrays = read_checkpoint(path)
    assert meta["n"] == 2
    np.testing.assert_array_equal(arrays["a"], np.ones(3, np.float32))


def test_metadata_not_json_raises(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    with pytest.raises(CheckpointError, match="JSON"):
        write_checkpoint(path, {"bad": object()}, {"a": np.zeros(2)})
    assert not path.exists()
    assert leftovers(tmp_path) == []


def test_object_arrays_are_refused_on_write(tmp_path) -> None:
    with pytest.raises(ValueError):
        write_checkpoint(tmp_path / "x.ckpt", {}, {"obj": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "x.ckpt").exists()


# ----------------------------------------------------------------------------- damage
def test_truncated_file(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    write_checkpoint(path, META, sample_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_empty_file(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def _member_data_offset(path, member: str) -> int:
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


@pytest.mark.parametrize("where", [200, 2000, -1])
def test_flipped_byte_inside_array_member(tmp_path, where: int) -> None:
    path = tmp_path / "run.ckpt"
    write_checkpoint(path, META, sample_arrays())
    start = _member_data_offset(path, "arrays/weights.npy")
    with zipfile.ZipFile(path) as z:
        size = z.getinfo("arrays/weights.npy").file_size
    pos = start + (where if where >= 0 else size - 1)
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checksum|truncated|corrupt"):
        read_checkpoint(path)


def test_checksum_mismatch_is_detected_even_with_valid_zip(tmp_path) -> None:
    # rebuild the archive with a consistent zip CRC but a tampered array: only the sha catches it
    path = tmp_path / "run.ckpt"
    write_checkpoint(path, META, sample_arrays())
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    blob = bytearray(members["arrays/weights.npy"])
    blob[-1] ^= 0x01
    members["arrays/weights.npy"] = bytes(blob)
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(CheckpointError, match="'weights' fails its checksum"):
        read_checkpoint(path)


def test_not_a_checkpoint(tmp_path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match="not a psdist checkpoint"):
        read_checkpoint(text)

    npy = tmp_path / "weights.npy"
    np.save(npy, np.zeros(4))
    with pytest.raises(CheckpointError):
        read_checkpoint(npy)

    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError):
        read_checkpoint(other_zip)

    wrong_format = tmp_path / "wrong.ckpt"
    with zipfile.ZipFile(wrong_format, "w") as z:
        z.writestr("meta.json", json.dumps({"format": "something-else/9", "arrays": {}}))
    with pytest.raises(CheckpointError, match="something-else/9"):
        read_checkpoint(wrong_format)

    bad_json = tmp_path / "badjson.ckpt"
    with zipfile.ZipFile(bad_json, "w") as z:
        z.writestr("meta.json", "{not json")
    with pytest.raises(CheckpointError):
        read_checkpoint(bad_json)


def test_missing_array_member(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.json", json.dumps({"format": FORMAT, "arrays": {"weights": "0" * 64}}))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_meta_json_not_an_object(tmp_path) -> None:
    path = tmp_path / "list.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.json", "[1, 2, 3]")
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_missing_path(tmp_path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="no checkpoint at") as e:
        read_checkpoint(missing)
    assert str(missing) in str(e.value)
    assert isinstance(e.value, ValueError)


# ----------------------------------------------------------------------------- no pickle
class _Boom:
    """Unpickling this calls a function that records it ran (and would do anything else)."""

    def __reduce__(self):
        return (_exploit, ("pwned",))


EXPLOITED: list[str] = []


def _exploit(tag: str) -> str:
    EXPLOITED.append(tag)
    return tag


def test_pickled_object_array_is_never_unpickled(tmp_path) -> None:
    obj = np.empty(1, dtype=object)
    obj[0] = _Boom()
    buf = io.BytesIO()
    np.lib.format.write_array(buf, obj, allow_pickle=True)
    blob = buf.getvalue()
    # sanity: loading it with pickle allowed would run the payload
    np.lib.format.read_array(io.BytesIO(blob), allow_pickle=True)
    assert EXPLOITED == ["pwned"]
    EXPLOITED.clear()

    path = tmp_path / "evil.ckpt"
    meta = {"format": FORMAT, "arrays": {"evil": hashlib.sha256(blob).hexdigest()}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.json", json.dumps(meta))
        z.writestr("arrays/evil.npy", blob)
    with pytest.raises((CheckpointError, ValueError)):
        read_checkpoint(path)
    assert EXPLOITED == []
    # and the error is psdist's own
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert EXPLOITED == []
    assert pickle.loads(pickle.dumps(1)) == 1  # pickle itself untouched by the test


# ----------------------------------------------------------------------------- atomicity
def _good_checkpoint(path) -> tuple[dict, dict[str, np.ndarray]]:
    arrays = {"a": np.arange(5, dtype=np.float32), "b": np.full(3, 7.0, np.float32), "c": np.ones(2)}
    write_checkpoint(path, {"generation": 1}, arrays)
    return {"generation": 1}, arrays


def _assert_previous_intact(path, arrays: dict[str, np.ndarray]) -> None:
    meta, back = read_checkpoint(path)
    assert meta["generation"] == 1
    assert back.keys() == arrays.keys()
    for k, a in arrays.items():
        assert back[k].tobytes() == a.tobytes()
    assert leftovers(os.path.dirname(path)) == []


def test_failure_while_serialising_arrays_keeps_previous(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run.ckpt"
    _, arrays = _good_checkpoint(path)
    real = np.lib.format.write_array
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", flaky)
    new = {"a": np.zeros(5, np.float32), "b": np.zeros(3, np.float32), "c": np.zeros(2)}
    with pytest.raises(OSError, match="disk on fire"):
        write_checkpoint(path, {"generation": 2}, new)
    assert calls["n"] == 2
    monkeypatch.undo()
    _assert_previous_intact(path, arrays)


def test_failure_while_writing_the_archive_keeps_previous(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run.ckpt"
    _, arrays = _good_checkpoint(path)
    real = zipfile.ZipFile.writestr
    calls = {"n": 0}

    def flaky(self, name, data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # meta.json, arrays/a.npy, then fail on arrays/b.npy
            raise OSError("no space left on device")
        return real(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", flaky)
    with pytest.raises(OSError, match="no space"):
        write_checkpoint(path, {"generation": 2}, {"a": np.zeros(5), "b": np.zeros(3), "c": np.zeros(2)})
    assert calls["n"] == 3
    monkeypatch.undo()
    _assert_previous_intact(path, arrays)


def test_failure_at_rename_keeps_previous(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run.ckpt"
    _, arrays = _good_checkpoint(path)

    def no_replace(src, dst):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(PermissionError):
        write_checkpoint(path, {"generation": 2}, {"a": np.zeros(5)})
    monkeypatch.undo()
    _assert_previous_intact(path, arrays)


def test_interrupt_keeps_previous(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run.ckpt"
    _, arrays = _good_checkpoint(path)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(path, {"generation": 2}, {"a": np.zeros(5)})
    monkeypatch.undo()
    _assert_previous_intact(path, arrays)


WRITER = """
import sys, zipfile
import numpy as np
from psdist.run.checkpoint import write_checkpoint
path = sys.argv[1]
write_checkpoint(path, {"generation": 1}, {"w": np.full(1000, 1.0, np.float32)})
real = zipfile.ZipFile.writestr
def stall(self, name, data, *a, **k):
    real(self, name, data, *a, **k)
    if name.startswith("arrays/"):  # half the archive is on disk: tell the parent, then wait to die
        print("mid-write", flush=True)
        sys.stdin.readline()
zipfile.ZipFile.writestr = stall
write_checkpoint(path, {"generation": 2}, {"w": np.full(1000, 2.0, np.float32), "m": np.zeros(1000)})
print("finished", flush=True)
"""


def test_sigkill_during_a_write_leaves_the_previous_checkpoint(tmp_path) -> None:
    """A real process killed (SIGKILL) in the middle of writing generation 2."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "run.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "mid-write"
        assert leftovers(tmp_path)  # the partial new archive exists next to the old one
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    meta, arrays = read_checkpoint(path)
    assert meta["generation"] == 1 and np.all(arrays["w"] == 1.0) and set(arrays) == {"w"}
    write_checkpoint(path, {"generation": 3}, {"w": np.zeros(3)})  # the next write cleans up
    assert read_checkpoint(path)[0]["generation"] == 3 and leftovers(tmp_path) == []
