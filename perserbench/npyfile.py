"""A ``.npy`` file written a chunk at a time, for arrays too large to hold in memory.

Why not ``np.save`` or a writable memory map: ``np.save`` needs the whole array, and pages
written through a map count in the writer's resident set until it is unmapped. Here only the
header goes through ``np.lib.format.open_memmap`` (which sizes the file); the data follows with
plain writes, so written pages sit in the kernel's page cache, in no process's RSS. Used for the
streamed synthetic features (:mod:`perserbench.data.synthetic.storage`) and for a sealed fold
worker's private copy of its rows (:meth:`perserbench.featurerows.MappedFeatures.write_npy`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def write_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...], chunks: Iterable[bytes], sync: bool = False) -> None:
    """Create the ``.npy`` file ``path`` of ``dtype`` and ``shape`` and fill it with ``chunks``
    (the array's C-order bytes, in order); ``sync`` flushes it to disk before returning."""
    header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    offset = header.offset
    del header
    with open(path, "r+b") as f:
        f.seek(offset)
        f.writelines(chunks)
        if sync:
            f.flush()
            os.fsync(f.fileno())
