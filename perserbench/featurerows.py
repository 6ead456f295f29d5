"""Utterance features read as float32 batches, from memory or from a memory-mapped file.

Why: at MSP-Podcast scale (150,000 utterances × 25 layers × 1024) the features are 7.7 GB even
in float16; one float32 copy of the training utterances is about 12 GB, and a copy per fold
worker more. :class:`FeatureRows` is the set of rows a method may read (one fold's training
utterances), without a copy of them: a file-backed source is read from its file, a
batch at a time, converted to float32 per batch; layer pooling then happens per batch in the
head, so nothing ``[U, L, D]``-sized in float32 ever exists.

Two promises keep existing results exact:

* an in-memory source (the small synthetic corpora) is copied once, as float32, exactly as
  the meta-train set always held it, and ``rows[idx]`` returns the very values ``x[idx]`` did;
* whole-set reductions (:meth:`FeatureRows.mean_std`, :meth:`FeatureRows.map`) run in one batch
  whenever the rows fit in :data:`BATCH_BYTES`, which is then the same computation on the same
  tensor as before; only larger sets are reduced batch by batch (float64 accumulation).

Resident memory: rows are read with positioned reads (``os.preadv``, one per run of
consecutive rows, straight into the batch's buffer), not through a memory map. Pages a process
touches through a map count in its RSS while the map is open, and the kernel maps whole
page-cache folios around each touched row: 40 minibatches of 64 random rows of a 25 × 1024
float16 file left 900 MB mapped for 131 MB of rows (measured), so a map dropped after every
128 MB of rows still grew a fold worker past 1.4 GB at 4× the base scale. A read leaves the
file in the kernel's page cache, shared by every process and counted in none.

Pickling: a file-backed set pickles as (path, offset, dtype, shape, row index), a few hundred
kilobytes. Such a reference reaches every row of its file, the held-out utterances' included,
so the runner never ships the cache's own file to a sealed fold worker: it first writes the
fold's rows, and only those, into a private file (:meth:`FeatureRows.sealed_copy`, streamed a
batch at a time in the stored dtype) and ships a reference to that (:mod:`perserbench.sealed`;
a hostile-plugin test in tests/test_scale.py). What stays open is the route around the API
that in-memory corpora share: code that opens the feature cache on disk by itself (DESIGN §2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

BATCH_BYTES = 128 * 2**20  # float32 bytes per batch of a whole-set pass (and per read buffer)

Index = torch.Tensor | np.ndarray | slice | int


class FeatureRows:
    """Rows ``index`` of a ``[N, L, D]`` feature array, read as float32 ``[..., L, D]`` tensors.

    ``rows[i]`` takes an int, a slice, or an integer tensor/array of any shape (the result has
    that shape followed by ``[L, D]``), like indexing the float32 tensor of those rows would."""

    def __init__(self, source: np.ndarray, index: np.ndarray | None = None) -> None:
        index = np.arange(len(source), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        self.shape: tuple[int, int, int] = (len(index), int(source.shape[1]), int(source.shape[2]))
        if isinstance(source, np.memmap) and source.filename is not None:
            if not source.flags.c_contiguous:
                raise ValueError("FeatureRows: a memory-mapped source must be a whole C-contiguous array")
            self._file: tuple[str, int, str, tuple[int, ...]] | None = (
                str(Path(source.filename).resolve()), int(source.offset), source.dtype.str, tuple(source.shape))
            self._index = index
            self._memory: torch.Tensor | None = None
        else:
            self._file = None
            self._index = np.arange(len(index), dtype=np.int64)
            self._memory = torch.from_numpy(np.ascontiguousarray(source[index], dtype=np.float32))

    # ------------------------------------------------------------------ shape

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def file_backed(self) -> bool:
        return self._file is not None

    @property
    def row_bytes(self) -> int:
        """float32 bytes of one row."""
        return 4 * self.shape[1] * self.shape[2]

    @property
    def batch_rows(self) -> int:
        """Rows per batch of a whole-set pass: all of them when they fit in :data:`BATCH_BYTES`."""
        return max(1, BATCH_BYTES // self.row_bytes)

    # ------------------------------------------------------------------ reading

    def __getitem__(self, idx: Index) -> torch.Tensor:
        if self._memory is not None:
            return self._memory[idx]
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        flat = np.asarray(idx.numpy() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        shape = flat.shape
        flat = flat.reshape(-1)
        if flat.size and (flat.min() < -len(self) or flat.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        rows = self._index[flat]
        out = self._read(rows)
        return torch.from_numpy(out).reshape(*shape, self.shape[1], self.shape[2])

    def _read(self, rows: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Copies of file rows ``rows`` (any order) as ``dtype``: sorted, read a batch at a time,
        each run of consecutive rows with one positioned read into the batch's buffer."""
        assert self._file is not None
        path, offset, stored, _ = self._file
        out = np.empty((len(rows), self.shape[1], self.shape[2]), dtype=dtype)
        order = np.argsort(rows, kind="stable")
        with open(path, "rb", buffering=0) as f:
            for start in range(0, len(rows), self.batch_rows):
                part = order[start:start + self.batch_rows]
                raw = np.empty((len(part), self.shape[1], self.shape[2]), dtype=stored)
                _read_rows(f.fileno(), offset, rows[part], raw)
                out[part] = raw
        return out

    def sealed_copy(self, path: Path) -> FeatureRows:
        """These rows, and no other, written to the new ``.npy`` file ``path`` in the stored dtype
        (a batch at a time, plain writes: nothing stays in this process's resident set), as a
        file-backed set over that file. Its values are the same floats, row for row, so whatever
        a method computes from it is unchanged; what differs is what its file reference reaches
        (module docstring, "Pickling"). An in-memory set is already a copy of its rows alone
        and is returned as is."""
        if self._file is None:
            return self
        dtype = np.dtype(self._file[2])
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=self.shape)
        offset = header.offset
        del header
        with open(path, "r+b") as f:
            f.seek(offset)
            f.writelines(self._read(self._index[start:start + self.batch_rows], dtype).tobytes()
                         for start in range(0, len(self), self.batch_rows))
        return FeatureRows(np.load(path, mmap_mode="r"))

    def batches(self) -> Any:
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


def _read_rows(fd: int, offset: int, rows: np.ndarray, out: np.ndarray) -> None:
    """Rows ``rows`` (sorted) of the ``.npy`` data at ``offset`` of file ``fd`` into ``out``."""
    row_bytes = out[0].nbytes if len(out) else 0
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


def gather(features: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Rows ``rows`` of a ``[N, L, D]`` feature array (any float dtype) as a float32 tensor.

    A float32 in-memory array gives exactly its values (as ``x[rows]`` did). A memory-mapped
    array is read from its file (module docstring, "Resident memory"), so a long run that reads
    every episode's rows does not accumulate mapped pages in the runner's RSS."""
    if isinstance(features, np.memmap) and features.filename is not None:
        return FeatureRows(features, np.asarray(rows, dtype=np.int64).reshape(-1))[:].reshape(
            *np.shape(rows), *features.shape[1:])
    return torch.from_numpy(np.ascontiguousarray(features[rows], dtype=np.float32))
