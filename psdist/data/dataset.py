"""Training data as a Zarr v3 group, cut into chunk-aligned tasks.

Layout of a psdist dataset (a Zarr group): ``x`` (N, ...) float features, ``y`` (N, ...) labels
(integers for classes, floats for regression), and optionally ``x_val``/``y_val``. Without them a
fraction of the training chunks is held out for validation (by chunk, so no task straddles the
split), drawn spread over the whole store (:func:`holdout_chunks`). Workers read their rows
straight from the store; the client and the parameter server never touch the data.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from psdist.core.finite import nonfinite_rows  # re-exported: its old home
from psdist.core.tree import concat, leaves
from psdist.data.fields import Fields
from psdist.data.split import epoch_order, holdout_chunks, task_seed  # re-exported: their old home
from psdist.errors import BadChunkError, ConfigError, DataError

__all__ = [
    "EVERY_CHUNK_ATTR",
    "Chunk",
    "DatasetInfo",
    "ScanReport",
    "ZarrDataset",
    "epoch_order",
    "holdout_chunks",
    "nonfinite_rows",
    "task_seed",
]


logger = logging.getLogger(__name__)

#: Most label rows :meth:`ZarrDataset.read_labels` reads at once (8 MiB of int64).
LABEL_BLOCK_ROWS = 1 << 20

#: Array attribute set by :func:`write_zarr`: every chunk of the array was written (even chunks
#: holding only the fill value), so a chunk file that is not in the store was lost.
EVERY_CHUNK_ATTR = "psdist_every_chunk"


@dataclass(frozen=True)
class Chunk:
    """A range of rows of the inputs' and targets' arrays; the unit of work of one task.

    ``x`` and ``y`` are the :class:`~psdist.data.fields.Fields` read (an array name is one).
    """

    index: int
    x: Fields
    y: Fields
    start: int
    stop: int

    def __post_init__(self) -> None:
        for side in ("x", "y"):
            value = getattr(self, side)
            if not isinstance(value, Fields):
                object.__setattr__(self, side, Fields.of(value, side))

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class DatasetInfo:
    """What :meth:`ZarrDataset.describe` found in the store."""

    rows: int
    x_shape: tuple[int, ...]
    x_dtype: str
    y_shape: tuple[int, ...]
    y_dtype: str
    train: tuple[Chunk, ...]
    val: tuple[Chunk, ...]
    #: every array read, by name: (row shape, dtype); ``x_*``/``y_*`` above are the first input's
    #: and the first target's
    arrays: tuple[tuple[str, tuple[int, ...], str], ...] = ()
    single_target: bool = True

    def dtype(self, name: str) -> str:
        """The dtype of array ``name`` (a training array, or its validation twin)."""
        found = dict((n, d) for n, _, d in self.arrays)
        return found.get(name, found.get(name.removesuffix("_val"), ""))

    @property
    def train_rows(self) -> int:
        return sum(c.rows for c in self.train)

    @property
    def val_rows(self) -> int:
        return sum(c.rows for c in self.val)


@dataclass
class ScanReport:
    """What :meth:`ZarrDataset.scan` found: unreadable chunks and rows holding NaN/Inf."""

    chunks: int = 0  # chunks read (training and validation)
    rows: int = 0
    bad: dict[int, str] = field(default_factory=dict)  # chunk index -> the BadChunkError message
    nonfinite: dict[int, int] = field(default_factory=dict)  # chunk index -> rows with NaN/Inf

    @property
    def ok(self) -> bool:
        return not self.bad and not self.nonfinite

    def __str__(self) -> str:
        if self.ok:
            return f"{self.chunks} chunks, {self.rows} rows: every chunk reads, no NaN/Inf"
        lines = [f"{self.chunks} chunks, {self.rows} rows: {len(self.bad)} bad chunks, "
                 f"{sum(self.nonfinite.values())} rows with NaN/Inf in {len(self.nonfinite)} chunks"]
        lines += [f"  chunk {i}: {msg}" for i, msg in sorted(self.bad.items())]
        lines += [f"  chunk {i}: {n} rows with NaN/Inf" for i, n in sorted(self.nonfinite.items())]
        return "\n".join(lines)


@dataclass(frozen=True)
class ZarrDataset:
    """A Zarr v3 group of training (and validation) arrays.

    Parameters
    ----------
    path
        Directory (or URL understood by zarr) of the group.
    x, y
        Names of the feature and label arrays (one input, one target).
    x_val, y_val
        Names of validation arrays; used when present in the group.
    inputs
        Several inputs instead of ``x``: a list of array names (the model is called
        ``model(*inputs)`` in that order) or a dict ``{argument: array}`` (``model(**inputs)``).
        Each array keeps its dtype (a bool mask stays bool, integer ids stay integers).
    targets
        Several targets instead of ``y``: a name, a list or a dict; the loss (and the metric
        functions) get a tensor, a tuple or a dict. With ``inputs``/``targets``, validation
        arrays are ``<name>_val`` for every array named, when all of them exist.
    val_fraction
        Fraction of training chunks held out when there are no validation arrays (0 for none).
        The held-out chunks are spread over the store, one drawn from each of equal stretches
        of it (see :func:`holdout_chunks`), not the last ones: converters and generators often
        write one class after another, and the last chunks would then hold one class only.
    holdout_seed
        Seed of that draw. The split depends only on the store's chunking, ``val_fraction``
        and this seed, never on the trainer's seed: every ``describe()`` (the trainer, a
        resumed training, :func:`psdist.testing`, :meth:`read_validation`) sees the same
        split, so training and validation rows never mix.
    chunk_rows
        Rows per task; default the store's chunk length along axis 0. Must be a multiple of it,
        so every task reads whole chunks.
    skip_bad_chunks
        What a task does with a chunk that cannot be read (see :meth:`read`): ``False`` (default)
        fails the training with :class:`~psdist.errors.BadChunkError`; ``True`` skips the chunk,
        logs a warning naming it and counts it (``bad_chunks`` of the task's result).
    """

    path: str | os.PathLike[str]
    x: str = "x"
    y: str = "y"
    x_val: str = "x_val"
    y_val: str = "y_val"
    val_fraction: float = 0.1
    chunk_rows: int | None = None
    skip_bad_chunks: bool = False
    holdout_seed: int = 0
    inputs: str | list[str] | dict[str, str] | None = None
    targets: str | list[str] | dict[str, str] | None = None

    def __post_init__(self) -> None:
        for side, given, plain in (("inputs", self.inputs, "x"), ("targets", self.targets, "y")):
            if given is not None and getattr(self, plain) != plain:
                raise ConfigError(f"give {side}= or {plain}=, not both ({side}={given!r}, {plain}={getattr(self, plain)!r})")
            if given is not None:
                Fields.of(given, side)  # checked now: a bad list fails where it is written
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction={self.val_fraction!r} must lie in [0, 1), e.g. 0.1")
        if self.chunk_rows is not None and (not isinstance(self.chunk_rows, int) or self.chunk_rows < 1):
            raise ConfigError(f"chunk_rows={self.chunk_rows!r} must be a positive integer")
        if not isinstance(self.skip_bad_chunks, bool):
            raise ConfigError(f"skip_bad_chunks={self.skip_bad_chunks!r} must be true or false")
        if not isinstance(self.holdout_seed, int) or isinstance(self.holdout_seed, bool) or self.holdout_seed < 0:
            raise ConfigError(f"holdout_seed={self.holdout_seed!r} must be an integer >= 0, e.g. 0")

    @property
    def input_fields(self) -> Fields:
        """The arrays the model is called with (``inputs``, else ``x``)."""
        return Fields.of(self.inputs if self.inputs is not None else self.x, "inputs")

    @property
    def target_fields(self) -> Fields:
        """The arrays the loss compares with (``targets``, else ``y``)."""
        return Fields.of(self.targets if self.targets is not None else self.y, "targets")

    def _val_fields(self) -> tuple[Fields, Fields]:
        x = Fields((self.x_val,)) if self.inputs is None else self.input_fields.renamed(lambda n: f"{n}_val")
        y = Fields((self.y_val,)) if self.targets is None else self.target_fields.renamed(lambda n: f"{n}_val")
        return x, y

    def _code(self, **changes: Any) -> str:
        """Python that builds this dataset with ``changes`` (error messages show it)."""
        args = [repr(os.fspath(self.path))]
        for f in fields(self):
            if f.name != "path":
                value = changes.get(f.name, getattr(self, f.name))
                if f.name in changes or value != f.default:
                    args.append(f"{f.name}={value!r}")
        return f"psdist.ZarrDataset({', '.join(args)})"

    def open_group(self) -> Any:
        """The zarr group (read-only); :class:`DataError` if it is missing or not a group."""
        import zarr

        path = os.fspath(self.path)
        if "://" not in path and not os.path.exists(path):
            raise DataError(
                f"data path {path!r} does not exist; write a dataset there first, e.g. "
                f"psdist.write_zarr({path!r}, x, y) or `psdist convert`"
            )
        try:
            return zarr.open_group(path, mode="r")
        except Exception as e:  # zarr raises several types for "not a group"
            raise DataError(f"{path!r} is not a readable Zarr group: {e}") from e

    def _array(self, group: Any, name: str, role: str) -> Any:
        if name not in group:
            have = sorted(group.array_keys())
            if not have:
                raise DataError(
                    f"the Zarr group {os.fspath(self.path)!r} has no arrays: write a dataset there, "
                    f"e.g. psdist.write_zarr({os.fspath(self.path)!r}, x, y, overwrite=True)"
                )
            # an example name for the fix: an array this dataset does not use already
            used = {self.x, self.y, *self.input_fields.names, *self.target_fields.names}
            spare = [k for k in have if k not in used] or have
            fix: Any = spare[0]
            if role in ("inputs", "targets"):  # the same list or dict, the missing name replaced
                fix = (self.input_fields if role == "inputs" else self.target_fields).renamed(
                    lambda n: spare[0] if n == name else n).to_config()
            raise DataError(
                f"the Zarr group {os.fspath(self.path)!r} has no array {name!r} (it has {have}); "
                f"name the {role} array, e.g. {self._code(**{role: fix})}"
            )
        return group[name]

    def describe(self) -> DatasetInfo:
        """Open the store, check it, and plan the chunks (cheap: metadata only).

        Chunks keep their position in the store as :attr:`Chunk.index` (validation arrays
        continue the count). Without validation arrays, ``val_fraction`` of the chunks (at
        least one) is held out, spread over the store by :func:`holdout_chunks` with
        :attr:`holdout_seed`; the rest, in store order, is the training set.
        """
        g = self.open_group()
        xf, yf = self.input_fields, self.target_fields
        arrays = self._arrays(g, xf, yf, "inputs" if self.inputs is not None else "x",
                              "targets" if self.targets is not None else "y")
        train = self._chunks(arrays, xf, yf, 0)
        xv, yv = self._val_fields()
        present = [n for n in (*xv.names, *yv.names) if n in g]
        if present and len(present) == len(xv.names) + len(yv.names):
            val_arrays = self._arrays(g, xv, yv, "x_val", "y_val")
            for name, vname, arr in zip((*xf.names, *yf.names), (*xv.names, *yv.names), val_arrays, strict=True):
                if tuple(arr.shape[1:]) != tuple(g[name].shape[1:]):
                    raise DataError(f"{vname!r} rows have shape {arr.shape[1:]}, {name!r} rows {g[name].shape[1:]}")
            val = self._chunks(val_arrays, xv, yv, len(train))
        elif present and (self.inputs is not None or self.targets is not None):
            missing = [n for n in (*xv.names, *yv.names) if n not in g]
            raise DataError(
                f"{os.fspath(self.path)!r} has validation arrays {present} but not {missing}: write every "
                f"<name>_val twin, or none (then {self.val_fraction:g} of the chunks are held out)"
            )
        elif self.val_fraction > 0:
            n = len(train)
            n_val = max(1, round(n * self.val_fraction)) if n > 1 else 0
            if n_val == 0:
                raise DataError(
                    f"{os.fspath(self.path)!r} has one chunk: nothing to hold out for validation; "
                    f"write validation arrays (psdist.write_zarr({os.fspath(self.path)!r}, x, y, x_val, "
                    f"y_val, overwrite=True)), use smaller chunks, or train without validation: {self._code(val_fraction=0)}"
                )
            if n_val >= n:
                raise DataError(
                    f"val_fraction={self.val_fraction} holds out all {n} chunks of "
                    f"{os.fspath(self.path)!r}: hold out fewer, e.g. "
                    f"{self._code(val_fraction=round(0.5 / n, 4))}, or write validation arrays "
                    f"(psdist.write_zarr({os.fspath(self.path)!r}, x, y, x_val, y_val, overwrite=True))"
                )
            held = set(holdout_chunks(n, n_val, self.holdout_seed))
            train, val = [c for c in train if c.index not in held], [c for c in train if c.index in held]
        else:
            val = []
        xa, ya = arrays[0], arrays[len(xf.names)]
        return DatasetInfo(
            rows=int(xa.shape[0]),
            x_shape=tuple(int(s) for s in xa.shape[1:]),
            x_dtype=str(xa.dtype),
            y_shape=tuple(int(s) for s in ya.shape[1:]),
            y_dtype=str(ya.dtype),
            train=tuple(train),
            val=tuple(val),
            arrays=tuple((n, tuple(int(s) for s in a.shape[1:]), str(a.dtype))
                         for n, a in zip((*xf.names, *yf.names), arrays, strict=True)),
            single_target=yf.single,
        )

    def _arrays(self, g: Any, xf: Fields, yf: Fields, xrole: str, yrole: str) -> list[Any]:
        """The arrays of ``xf`` then ``yf``, checked: present, as long as each other, not empty."""
        arrays = [self._array(g, n, xrole) for n in xf.names] + [self._array(g, n, yrole) for n in yf.names]
        names = (*xf.names, *yf.names)
        lengths = {n: int(a.shape[0]) for n, a in zip(names, arrays, strict=True)}
        if len(set(lengths.values())) > 1:
            if xf.single and yf.single:
                raise DataError(
                    f"{xf.names[0]!r} has {lengths[xf.names[0]]} rows but {yf.names[0]!r} has "
                    f"{lengths[yf.names[0]]}: every sample needs exactly one label; rewrite the labels to match"
                )
            raise DataError(f"the arrays of one sample must have as many rows each, but they have {lengths}; "
                            "rewrite them row-aligned (one row per sample in every array)")
        if arrays[0].shape[0] == 0:
            raise DataError(f"{xf.names[0]!r} is empty: there is nothing to train on")
        if xf.single and np.dtype(str(arrays[0].dtype)).kind != "f":
            raise DataError(f"{xf.names[0]!r} has dtype {arrays[0].dtype}; features must be floating point "
                            f"(integer ids or masks: name the arrays with inputs=[...], which keeps each dtype)")
        return arrays

    def _chunks(self, arrays: list[Any], xf: Fields, yf: Fields, first: int) -> list[Chunk]:
        # every task reads whole store chunks of every array: a multiple of each one's length
        store_rows = math.lcm(*(int(a.chunks[0]) for a in arrays))
        rows = self.chunk_rows or store_rows
        if rows % store_rows:
            same = len({int(a.chunks[0]) for a in arrays}) == 1
            what = repr(xf.names[0]) if same else f"the arrays {list((*xf.names, *yf.names))} (their least common multiple)"
            raise ConfigError(
                f"chunk_rows={rows} is not a multiple of the store's chunk length {store_rows} "
                f"of {what}; use {self._code(chunk_rows=store_rows * max(1, rows // store_rows))}"
            )
        n = int(arrays[0].shape[0])
        return [
            Chunk(first + i, xf, yf, s, min(s + rows, n))
            for i, s in enumerate(range(0, n, rows))
        ]

    def read(self, chunk: Chunk, group: Any | None = None) -> tuple[Any, Any]:
        """Read one chunk's rows ``(x, y)``: each an array, or a tuple/dict of arrays as the
        dataset's ``inputs``/``targets`` say (every array its own dtype, rows aligned).

        Raises
        ------
        BadChunkError
            A Zarr chunk of these rows cannot be decoded (bytes overwritten, file truncated) or
            its file is missing. The error names the store, the array, the task's chunk index and
            rows, the Zarr chunk and the cause. Whether the caller skips it is the caller's
            business (:attr:`skip_bad_chunks`): this method always raises.
        DataError
            An array is missing altogether, or the store cannot be opened.

        Notes
        -----
        Zarr reads a chunk whose file is absent as the array's fill value, silently, and it
        legitimately leaves out chunks that hold nothing but the fill value (a chunk of labels
        that are all class 0, say). A missing chunk file is therefore treated as bad

        - in an array written by :func:`write_zarr` (attribute :data:`EVERY_CHUNK_ATTR`: every
          chunk was written, so a missing one was lost), and
        - in the feature array ``x`` of any store (a whole chunk of features equal to the fill
          value is not data);

        in other arrays (labels of stores written by other tools) it is read as the fill value.
        The check costs one existence test of each Zarr chunk file of the task per array (a
        ``stat`` on a local store). Bytes overwritten inside an *uncompressed* chunk without a
        checksum codec decode without error and cannot be detected here.
        """
        g = group if group is not None else self.open_group()
        x = chunk.x.pack([self._read_rows(g, n, chunk, features=True) for n in chunk.x.names])
        y = chunk.y.pack([self._read_rows(g, n, chunk, features=False) for n in chunk.y.names])
        return x, y

    def read_labels(self, chunks: Sequence[Chunk], group: Any | None = None, target: int = 0
                    ) -> Iterator[tuple[Chunk, np.ndarray]]:
        """The labels of ``chunks``, each as ``(chunk, y rows)``; never reads the features.

        ``target``: which of several targets (its position in ``targets``). Adjacent chunks are
        read together (up to :data:`LABEL_BLOCK_ROWS` rows at once), so reading every label of
        a store costs a few large reads. A chunk that cannot be read raises
        :class:`~psdist.errors.BadChunkError`, or is left out with a warning when
        :attr:`skip_bad_chunks` is set. Chunks come back grouped by label array, in row order.
        """
        g = group if group is not None else self.open_group()
        by_array: dict[str, list[Chunk]] = {}
        for c in chunks:
            by_array.setdefault(c.y.names[target], []).append(c)
        for name, cs in by_array.items():
            run: list[Chunk] = []
            for c in sorted(cs, key=lambda c: c.start):
                if run and (c.start != run[-1].stop or c.stop - run[0].start > LABEL_BLOCK_ROWS):
                    yield from self._label_run(g, name, run)
                    run = []
                run.append(c)
            if run:
                yield from self._label_run(g, name, run)

    def _label_run(self, g: Any, name: str, run: list[Chunk]) -> Iterator[tuple[Chunk, np.ndarray]]:
        span = Chunk(run[0].index, run[0].x, Fields((name,)), run[0].start, run[-1].stop)
        try:
            y = self._read_rows(g, name, span, features=False)
        except BadChunkError:
            if len(run) == 1 and not self.skip_bad_chunks:
                raise
            y = None  # read chunk by chunk: the error then names the right chunk
        for c in run:
            if y is not None:
                yield c, y[c.start - span.start : c.stop - span.start]
                continue
            try:
                yield c, self._read_rows(g, name, c, features=False)
            except BadChunkError as e:
                if not self.skip_bad_chunks:
                    raise
                logger.warning("psdist: skipping the labels of a bad chunk: %s", e)

    def _read_rows(self, g: Any, name: str, chunk: Chunk, features: bool) -> np.ndarray:
        try:
            arr = g[name]
        except Exception as e:
            raise DataError(
                f"cannot open array {name!r} in {os.fspath(self.path)!r} to read rows "
                f"{chunk.start}:{chunk.stop}: {type(e).__name__}: {e}"
            ) from e
        grid = _store_chunks(arr, chunk.start, chunk.stop)
        if features or arr.attrs.get(EVERY_CHUNK_ATTR, False):
            for coords in grid:
                if not _chunk_exists(arr, coords):
                    raise self._bad(arr, name, chunk, coords, "its chunk file is missing from the store")
        try:
            return np.asarray(arr[chunk.start : chunk.stop])
        except Exception as e:
            cause = f"{type(e).__name__}: {e}".rstrip(". ")
            raise self._bad(arr, name, chunk, _first_unreadable(arr, grid), cause) from e

    def _bad(self, arr: Any, name: str, chunk: Chunk, coords: tuple[int, ...] | None, cause: str) -> BadChunkError:
        path = os.fspath(self.path)
        where = "a Zarr chunk"
        if coords is not None:
            try:
                where = f"Zarr chunk {coords} (key {arr.metadata.encode_chunk_key(coords)!r})"
            except Exception:
                where = f"Zarr chunk {coords}"
        return BadChunkError(
            f"bad chunk in {path!r}: array {name!r}, chunk {chunk.index} (rows "
            f"{chunk.start}:{chunk.stop}), {where}: {cause}. Re-convert or re-write the data "
            "(psdist convert / psdist.write_zarr), or skip and count bad chunks with "
            f"{self._code(skip_bad_chunks=True)} (YAML: data: {{skip_bad_chunks: true}})",
            path=path, array=name, chunk=chunk.index, rows=(chunk.start, chunk.stop), store_chunk=coords,
        )

    def scan(self) -> ScanReport:
        """Read every chunk once: which cannot be read, which rows hold NaN/Inf (slow: all data).

        The check to run when a training reports bad chunks or NaN; it never raises for a bad
        chunk, whatever :attr:`skip_bad_chunks` says.
        """
        info = self.describe()
        g = self.open_group()
        report = ScanReport()
        for c in info.train + info.val:
            report.chunks += 1
            report.rows += c.rows
            try:
                x, y = self.read(c, g)
            except BadChunkError as e:
                report.bad[c.index] = str(e)
                continue
            n = int(nonfinite_rows(*leaves(x), *leaves(y)).sum())
            if n:
                report.nonfinite[c.index] = n
        return report

    def read_validation(self) -> tuple[Any, Any]:
        """All validation rows ``(x, y)`` in memory (for evaluating a trained model); arrays, or
        tuples/dicts of them as ``inputs``/``targets`` say."""
        info = self.describe()
        if not info.val:
            raise DataError(
                f"{os.fspath(self.path)!r} has no validation rows; hold some out, e.g. "
                f"{self._code(val_fraction=0.2)}.read_validation()"
            )
        g = self.open_group()
        parts = []
        for c in info.val:
            try:
                parts.append(self.read(c, g))
            except BadChunkError as e:
                if not self.skip_bad_chunks:
                    raise
                logger.warning("psdist: skipping a bad validation chunk: %s", e)
        if not parts:
            raise DataError(f"every validation chunk of {os.fspath(self.path)!r} is bad")
        return (concat([p[0] for p in parts], np.concatenate), concat([p[1] for p in parts], np.concatenate))


def _grid_shape(arr: Any) -> tuple[int, ...]:
    """The shape of one stored chunk (one shard, for sharded arrays)."""
    try:
        return tuple(int(c) for c in arr.metadata.chunk_grid.chunk_shape)
    except AttributeError:  # zarr v2 metadata
        return tuple(int(c) for c in arr.metadata.chunks)


def _store_chunks(arr: Any, start: int, stop: int) -> list[tuple[int, ...]]:
    """Grid coordinates of the Zarr chunks (shards, for sharded arrays) holding rows start:stop."""
    shape = _grid_shape(arr)
    if stop <= start or not shape:
        return []
    axes = [range(start // shape[0], math.ceil(stop / shape[0]))]
    axes += [range(math.ceil(int(n) / c)) for n, c in zip(arr.shape[1:], shape[1:], strict=True)]
    return list(itertools.product(*axes))


def _chunk_exists(arr: Any, coords: tuple[int, ...]) -> bool:
    """Whether the store holds the file (object) of one chunk; ``True`` if it cannot tell."""
    from zarr.core.sync import sync

    try:
        key = arr.metadata.encode_chunk_key(coords)
        prefix = arr.store_path.path
        return bool(sync(arr.store_path.store.exists(f"{prefix}/{key}" if prefix else key)))
    except Exception:  # an exotic store or metadata: leave it to the read
        logger.debug("psdist: cannot check chunk %s of %s", coords, arr, exc_info=True)
        return True


def _first_unreadable(arr: Any, grid: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The first of ``grid``'s chunks that fails to decode on its own (the error path only)."""
    if len(grid) == 1:
        return grid[0]
    shape = _grid_shape(arr)
    for coords in grid:
        region = tuple(slice(i * c, min((i + 1) * c, int(n))) for i, c, n in zip(coords, shape, arr.shape, strict=True))
        try:
            arr[region]
        except Exception:
            return coords
    return None
