"""Float16 synthetic features streamed into the feature cache and opened as a memory map.

Why: an MSP-Podcast-sized synthetic corpus (150,000 utterances × 25 layers × 1024) is 7.7 GB in
float16 and would be 15 GB in float32; it cannot be drawn in memory on a 24 GB machine beside
anything else. A chunked draw (:class:`~perserbench.data.synthetic.world.FeatureRecipe`) is
written chunk by chunk into a preallocated ``.npy`` memory map in the feature cache
(:func:`perserbench.features.cache.cache_root`, ``$PERSERBENCH_CACHE``), flushed, and renamed
into place: a reader sees a complete file or none, and a killed generation leaves only a
``.partial`` file that the next one replaces. The file's name is a digest of everything the
features depend on (the world's seed and size, layers, dim, dtype, the format), so every
generator, workload and listener count of a seed shares one file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from perserbench.data.synthetic.world import FeatureRecipe
from perserbench.npyfile import write_npy

FORMAT = 1
FOLDER = "synthetic-features"


def feature_path(seed: int, utterances: int, layers: int, dim: int, dtype: str,
                 cache_dir: str | Path | None = None) -> Path:
    """Where the features of this world live in the feature cache."""
    from perserbench.features.cache import cache_root

    key = json.dumps({"format": FORMAT, "seed": seed, "utterances": utterances, "layers": layers, "dim": dim,
                      "dtype": dtype}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root(cache_dir) / FOLDER / f"s{seed}-n{utterances}-{layers}x{dim}-{dtype}-{digest}.npy"


def write_features(recipe: FeatureRecipe, path: Path, dtype: str) -> None:
    """Stream every chunk of ``recipe`` into the ``.npy`` file ``path``, atomically (a
    ``.partial`` file renamed when complete). Memory: one chunk, never the whole array. The
    chunks are written with plain file writes (:func:`perserbench.npyfile.write_npy`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        write_npy(partial, np.dtype(dtype), recipe.shape,
                  (recipe.chunk(c).astype(dtype).tobytes() for c in range(recipe.chunks)), sync=True)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def stored_features(recipe: FeatureRecipe, path: Path, dtype: str) -> np.ndarray:
    """The features as a read-only memory map, generated into the cache on first use."""
    if path.exists():
        mapped = np.load(path, mmap_mode="r")
        if mapped.shape == recipe.shape and mapped.dtype == np.dtype(dtype):
            return mapped
    write_features(recipe, path, dtype)
    return np.load(path, mmap_mode="r")
