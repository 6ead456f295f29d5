"""Utterance features read as float32 batches, from memory or from memory-mapped files.

Why: at MSP-Podcast scale (150,000 utterances × 25 layers × 1024) the features are 7.7 GB even
in float16; one float32 copy of the training utterances is about 12 GB, and a copy per fold
worker more. :class:`FeatureRows` is the set of rows a method may read (one fold's training
utterances), without a copy of them: a file-backed source (:class:`MappedFeatures`) is read
from its files, a batch at a time, converted to float32 per batch; layer pooling then
happens per batch in the head, so nothing ``[U, L, D]``-sized in float32 ever exists.

File-backed sources come in two layouts, read by one code path (:class:`MappedFeatures`): one
``[N, L, D]`` ``.npy`` file (the synthetic scale corpora, a sealed copy), and the feature cache
of real corpora, one ``[N_cache, D]`` file per layer whose rows are in the cache's manifest order
(:func:`perserbench.features.cache.load_cached_features`), with a corpus-row → cache-row map.

Two promises keep existing results exact:

* an in-memory source (the small synthetic corpora) is copied once, as float32, exactly as
  the meta-train set always held it, and ``rows[idx]`` returns the very values ``x[idx]`` did;
  a file-backed one returns the same floats (float32 stored values are copied as they are);
* whole-set reductions (:meth:`FeatureRows.mean_std`, :meth:`FeatureRows.map`) run in one batch
  whenever the rows fit in :data:`BATCH_BYTES`, which is then the same computation on the same
  tensor as before; only larger sets are reduced batch by batch (float64 accumulation).

Resident memory: rows are read with positioned reads (``os.preadv``, one per run of
consecutive rows, straight into the batch's buffer), not through a memory map. Pages a process
touches through a map count in its RSS while the map is open, and the kernel maps whole
page-cache folios around each touched row: 40 minibatches of 64 random rows of a 25 × 1024
float16 file left 900 MB mapped for 131 MB of rows (measured), so a map dropped after every
128 MB of rows still grew a fold worker past 1.4 GB at 4× the base scale. A read leaves the
files in the kernel's page cache, shared by every process and counted in none.

Snapshot: a :class:`MappedFeatures` keeps its files open and reads through those handles,
so it reads the files it was opened on (the cache entry that was checked when the task was
loaded) even when the entry is replaced meanwhile (``features extract --force``, a repair, which
rename a new entry into place): a run never mixes rows of two extractions. The replaced files'
disk space is freed when the run closes them.

Pickling: a file-backed set pickles as (paths, offsets, dtype, shapes, row map), a few hundred
kilobytes, and reopens the paths where it is unpickled. Such a reference reaches every row of
its files, the held-out utterances' included, so the runner never ships the cache's own files to
a sealed fold worker: it first writes the fold's rows, and only those, into a private file
(:meth:`FeatureRows.sealed_copy`, streamed a batch at a time in the stored dtype) and ships a
reference to that (:mod:`perserbench.sealed`; a hostile-plugin test in tests/test_scale.py, on
both layouts). What stays open is the route around the API that in-memory corpora
share: code that opens the feature cache on disk by itself (DESIGN §2).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from perserbench.npyfile import write_npy

BATCH_BYTES = 128 * 2**20  # float32 bytes per batch of a whole-set pass (and per read buffer)

Index = torch.Tensor | np.ndarray | slice | int


class _OpenFiles:
    """Read handles on a :class:`MappedFeatures`' files, shared with its subsets and closed
    when the last of them is gone (a handle keeps the file it opened, whatever is renamed
    over its path later: module docstring, "Snapshot")."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.handles: tuple[BinaryIO, ...] = ()
        self.handles = tuple(open(path, "rb") for path in paths)  # noqa: SIM115 (closed in __del__)

    def __del__(self) -> None:
        for handle in self.handles:
            handle.close()


def _batch_rows(layers: int, dim: int) -> int:
    """Rows per batch: as many float32 ``[L, D]`` rows as fit in :data:`BATCH_BYTES` (at least one)."""
    return max(1, BATCH_BYTES // (4 * layers * dim))


class MappedFeatures:
    """A ``[N, L, D]`` feature array that stays on disk: rows are read on demand, never all at once.

    Its layers are stored side by side in one or more files (``files``: one ``[N_file, L, D]``
    file, or one ``[N_file, D]`` file per layer), and row ``r`` is row ``rows[r]`` of every file.
    ``features[idx]`` indexes like a NumPy array (int, slice, boolean mask, integer array of any
    shape) and returns the rows in the stored dtype, so code that indexed the in-memory array
    keeps working; ``np.asarray(features)`` reads everything (small arrays only)."""

    ndim = 3

    def __init__(self, files: Sequence[np.memmap], rows: np.ndarray | None = None) -> None:
        if not files:
            raise ValueError("MappedFeatures: no files")
        parts = []
        for m in files:
            if not (isinstance(m, np.memmap) and m.filename is not None and m.flags.c_contiguous
                    and m.ndim in (2, 3)):
                raise ValueError("MappedFeatures: every file must be a whole C-contiguous memory-mapped array")
            shape = (m.shape[0], 1, m.shape[1]) if m.ndim == 2 else tuple(m.shape)
            parts.append((str(Path(m.filename).resolve()), int(m.offset), shape))
        dtypes = {m.dtype.str for m in files}
        if len(dtypes) != 1 or len({(s[0], s[2]) for _, _, s in parts}) != 1:
            raise ValueError("MappedFeatures: the files differ in dtype, rows or dimension")
        self._parts: tuple[tuple[str, int, tuple[int, int, int]], ...] = tuple(parts)
        self.dtype = np.dtype(dtypes.pop())
        n_file = parts[0][2][0]
        self._rows = np.arange(n_file, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if self._rows.ndim != 1 or (len(self._rows) and (self._rows.min() < 0 or self._rows.max() >= n_file)):
            raise ValueError(f"MappedFeatures: the row map must be a 1-d array of rows in [0, {n_file})")
        self.shape: tuple[int, int, int] = (len(self._rows), sum(s[1] for _, _, s in parts), parts[0][2][2])
        self._open()

    def _open(self) -> None:
        self._files = _OpenFiles(self.files)

    # ------------------------------------------------------------------ shape

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def files(self) -> tuple[str, ...]:
        """The files this array reads (all of their rows are reachable through them)."""
        return tuple(path for path, _, _ in self._parts)

    def subset(self, index: np.ndarray) -> MappedFeatures:
        """Rows ``index`` of this array, as an array over the same open files (no copy)."""
        out = object.__new__(MappedFeatures)
        out.__dict__.update(self.__dict__)
        out._rows = self._rows[np.asarray(index, dtype=np.int64)]
        out.shape = (len(out._rows), *self.shape[1:])
        return out

    # ------------------------------------------------------------------ reading

    def __getitem__(self, idx: Index) -> np.ndarray:
        return self.take(idx)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.take(slice(None))
        return out if dtype is None else out.astype(dtype, copy=False)

    def take(self, idx: Index, dtype: np.dtype | type | None = None) -> np.ndarray:
        """Copies of rows ``idx`` (any NumPy index of the first axis) as ``dtype`` (the stored
        one by default), shaped ``idx``'s shape followed by ``[L, D]``."""
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        file_rows = self._rows[idx]
        out = self._read(np.reshape(file_rows, -1), self.dtype if dtype is None else np.dtype(dtype))
        return out.reshape(*np.shape(file_rows), *self.shape[1:])

    def _read(self, file_rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """File rows ``file_rows`` (any order): sorted, read a batch at a time, each file's run
        of consecutive rows with one positioned read into the batch's buffer."""
        out = np.empty((len(file_rows), *self.shape[1:]), dtype=dtype)
        order = np.argsort(file_rows, kind="stable")
        step = _batch_rows(*self.shape[1:])
        for start in range(0, len(order), step):
            part = order[start:start + step]
            src = file_rows[part]
            layer = 0
            for handle, (_, offset, shape) in zip(self._files.handles, self._parts, strict=True):
                raw = np.empty((len(part), *shape[1:]), dtype=self.dtype)
                _read_rows(handle.fileno(), offset, src, raw)
                out[part, layer:layer + shape[1]] = raw
                layer += shape[1]
        return out

    def write_npy(self, path: Path) -> None:
        """These rows, and no other, into the new ``.npy`` file ``path`` as one ``[N, L, D]``
        array in the stored dtype, a batch at a time with plain writes (nothing of it stays in
        this process's resident set)."""
        step = _batch_rows(*self.shape[1:])
        write_npy(path, self.dtype, self.shape,
                  (self.take(slice(start, start + step)).tobytes() for start in range(0, len(self), step)))

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_files"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()


FeatureArray = np.ndarray | MappedFeatures  # a task's features: in memory, one memory map, or MappedFeatures


def _as_mapped(source: FeatureArray) -> MappedFeatures | None:
    """``source`` as a :class:`MappedFeatures` when it is file-backed, else ``None``."""
    if isinstance(source, MappedFeatures):
        return source
    if isinstance(source, np.memmap) and source.filename is not None:
        return MappedFeatures([source])
    return None


class FeatureRows:
    """Rows ``index`` of a ``[N, L, D]`` feature array, read as float32 ``[..., L, D]`` tensors.

    ``rows[i]`` takes an int, a slice, or an integer tensor/array of any shape (the result has
    that shape followed by ``[L, D]``), like indexing the float32 tensor of those rows would."""

    def __init__(self, source: FeatureArray, index: np.ndarray | None = None) -> None:
        index = np.arange(len(source), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        self.shape: tuple[int, int, int] = (len(index), int(source.shape[1]), int(source.shape[2]))
        mapped = _as_mapped(source)
        self._mapped = None if mapped is None else mapped.subset(index)
        self._memory = None if mapped is not None else torch.from_numpy(
            np.ascontiguousarray(source[index], dtype=np.float32))

    # ------------------------------------------------------------------ shape

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def file_backed(self) -> bool:
        return self._mapped is not None

    @property
    def files(self) -> tuple[str, ...]:
        """The files a file-backed set reads (every row of them is reachable); none in memory."""
        return () if self._mapped is None else self._mapped.files

    @property
    def row_bytes(self) -> int:
        """float32 bytes of one row."""
        return 4 * self.shape[1] * self.shape[2]

    @property
    def batch_rows(self) -> int:
        """Rows per batch of a whole-set pass: all of them when they fit in :data:`BATCH_BYTES`."""
        return _batch_rows(*self.shape[1:])

    # ------------------------------------------------------------------ reading

    def __getitem__(self, idx: Index) -> torch.Tensor:
        if self._mapped is None:
            assert self._memory is not None
            return self._memory[idx]
        return torch.from_numpy(self._mapped.take(idx, np.float32))

    def sealed_copy(self, path: Path) -> FeatureRows:
        """These rows, and no other, written to the new ``.npy`` file ``path`` in the stored dtype
        (:meth:`MappedFeatures.write_npy`), as a file-backed set over that file. Its values are
        the same floats, row for row, so whatever a method computes from it is unchanged; what
        differs is what its file reference reaches (module docstring, "Pickling"). An in-memory
        set is already a copy of its rows alone and is returned as is."""
        if self._mapped is None:
            return self
        self._mapped.write_npy(path)
        return FeatureRows(np.load(path, mmap_mode="r"))

    def batches(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, float32 batch)`` over all rows in order, :attr:`batch_rows` at a time."""
        for start in range(0, len(self), self.batch_rows):
            yield start, self[start:start + self.batch_rows]

    # ------------------------------------------------------------------ whole-set passes

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn`` over all rows, batch by batch, results concatenated along the first dimension
        (one call on all rows when they fit in one batch: the same computation as on a tensor)."""
        if len(self) <= self.batch_rows:
            return fn(self[:])
        return torch.cat([fn(batch) for _, batch in self.batches()])

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-(layer, dim) mean and unbiased standard deviation over all rows, float32. One
        batch: ``x.mean(0), x.std(0)`` exactly; more: batch statistics merged in float64 (Chan)."""
        if len(self) <= self.batch_rows:
            x = self[:]
            return x.mean(dim=0), x.std(dim=0)
        n, mean, m2 = 0, None, None
        for _, batch in self.batches():
            b = batch.double()
            del batch  # in place from here: one float64 batch alive, not four (~1 GB less per worker)
            nb, mb = len(b), b.mean(dim=0)
            m2b = b.sub_(mb).square_().sum(dim=0)
            if mean is None:
                n, mean, m2 = nb, mb, m2b
                continue
            delta = mb - mean
            total = n + nb
            mean = mean + delta * (nb / total)
            m2 = m2 + m2b + delta.square() * (n * nb / total)
            n = total
        assert mean is not None and m2 is not None
        return mean.float(), (m2 / max(n - 1, 1)).sqrt().float()

    def materialize(self) -> torch.Tensor:
        """All rows as one float32 tensor ``[U, L, D]`` (U × L × D × 4 bytes: small sets only)."""
        return self[:] if self._memory is None else self._memory


def gather(features: FeatureArray, rows: np.ndarray) -> torch.Tensor:
    """Rows ``rows`` of a ``[N, L, D]`` feature array (any float dtype) as a float32 tensor.

    A float32 in-memory array gives exactly its values (as ``x[rows]`` did). A file-backed one
    is read from its files (module docstring, "Resident memory"), so a long run that reads every
    episode's rows does not accumulate mapped pages in the runner's RSS."""
    mapped = _as_mapped(features)
    if mapped is None:
        return torch.from_numpy(np.ascontiguousarray(features[rows], dtype=np.float32))
    return torch.from_numpy(mapped.take(np.asarray(rows, dtype=np.int64), np.float32))


def _read_rows(fd: int, offset: int, rows: np.ndarray, out: np.ndarray) -> None:
    """Rows ``rows`` (sorted) of the C-ordered array at byte ``offset`` of file ``fd`` into ``out``."""
    if not len(rows):
        return
    row_bytes = out[0].nbytes
    buffer = memoryview(out.reshape(-1).view(np.uint8))
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for first, end in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
        target = buffer[first * row_bytes:end * row_bytes]
        position = offset + int(rows[first]) * row_bytes
        while len(target):
            got = os.preadv(fd, [target], position)
            if got <= 0:
                raise OSError(f"{len(target)} bytes short reading features at byte {position} (truncated file?)")
            target, position = target[got:], position + got
