"""Peak memory of loading a real corpus's cached features: in memory versus file-backed.

Not a test: a measurement for the feature cache's "Memory" paragraph (issue 11). It writes a
feature-cache entry of random float32 features shaped like a real upstream (``--utterances``
rows × ``--layers`` layer files × ``--dim``, rows in reverse corpus order, as a cache whose
manifest order differs from the corpus's) for a corpus without audio, then, in a fresh process
per mode, does what a run does before any method trains: load the task's features with the
finite-values check, build a fold's training set of 80 % of the rows (``FeatureRows``), its
standardisation statistics, and the private sealed copy a fold worker gets. It prints that
process's peak RSS (``ru_maxrss``) after the imports and after the work.

    OMP_NUM_THREADS=1 python benchmarks/cache_memory.py --utterances 8000 --layers 25 --dim 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from perserbench.data import Corpus

ROOT = Path(__file__).resolve().parent.parent


def corpus(n: int, folder: Path) -> Corpus:
    """``n`` utterances without audio, labelled by one listener, its root ``folder``."""
    from perserbench.data import Annotations, Corpus, Utterance

    utts = tuple(Utterance(f"u{i:06d}", "s", "x") for i in range(n))
    ann = Annotations(np.arange(n), np.array(["L0"] * n, dtype=object), np.ones((n, 1), dtype=bool))
    return Corpus("bench", ("a",), utts, ann, {}, metadata={"root": str(folder), "cache_dir": str(folder / "cache")})


def write_entry(n: int, layers: int, dim: int, folder: Path) -> None:
    """The cache entry of :func:`corpus`, written a block of rows at a time (never whole)."""
    from perserbench.features.cache import FORMAT_VERSION, entry_dir

    entry = entry_dir(corpus(n, folder), "bench")
    if (entry / "manifest.json").is_file():
        return
    entry.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = []
    for layer in range(layers):
        path = entry / f"layer_{layer:02d}.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
        for start in range(0, n, 4096):
            out[start:start + 4096] = rng.normal(size=(min(4096, n - start), dim))
        out.flush()
        del out
        files.append({"name": path.name, "size": path.stat().st_size, "sha256": ""})
    ids = [f"u{i:06d}" for i in range(n)][::-1]
    manifest = {"format": FORMAT_VERSION, "ids": ids, "audio": [{"id": u, "size": 0, "mtime_ns": 0} for u in ids],
                "shapes": {"rows": n, "layers": layers, "dim": dim}, "layer_files": files}
    (entry / "manifest.json").write_text(json.dumps(manifest))


def measure(n: int, folder: Path, mode: str) -> dict[str, float]:
    """One mode's work, in this process (run as a child of :func:`main`)."""
    import torch  # noqa: F401 (the imports a run has)

    from perserbench.featurerows import FeatureRows
    from perserbench.features import cache
    from perserbench.tasks import _features

    after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cache.IN_MEMORY_BYTES = 2**62 if mode == "memory" else 0
    start = time.perf_counter()
    feats = _features(corpus(n, folder), "bench")  # load_cached_features + the finite check
    rows = FeatureRows(feats, np.flatnonzero(np.arange(n) % 5 != 0))  # a fold's 80 %
    rows.mean_std()
    with tempfile.TemporaryDirectory(dir=folder) as private:
        rows.sealed_copy(Path(private) / "features.npy")
    return {"type": type(feats).__name__, "wall_s": time.perf_counter() - start, "after_imports_mb": after_imports,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=8000)
    parser.add_argument("--layers", type=int, default=25)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="where the entry is written (default: a temp dir)")
    parser.add_argument("--child", choices=("memory", "mapped"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.utterances, args.dir, args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = (args.dir or Path(tmp)).resolve()
        sys.path.insert(0, str(ROOT))
        write_entry(args.utterances, args.layers, args.dim, folder)
        size = args.utterances * args.layers * args.dim * 4 / 2**20
        print(f"{args.utterances} utterances × {args.layers} × {args.dim}: {size:.0f} MiB as float32")
        for mode in ("memory", "mapped"):
            out = subprocess.run([sys.executable, __file__, "--utterances", str(args.utterances), "--dir", str(folder),
                                  "--child", mode], capture_output=True, text=True, check=True, cwd=ROOT)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{mode:7s} {r['type']:15s} peak RSS {r['peak_mb']:7.0f} MB (after imports {r['after_imports_mb']:.0f})"
                  f"  {r['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
