"""Feature extraction split over Ray tasks (``features extract --executor ray``).

The driver (:func:`perserbench.features.cache.extract_features`) plans the batches exactly as
a local extraction does; here they are dealt round-robin into shards (batches are sorted by
clip length, so round-robin gives every shard a similar share of long clips), one Ray task
per shard. A task loads the upstream once per worker process, embeds its batches with the
same code as a local extraction (:func:`~perserbench.features.cache.embed_batch`), and writes
one ``shard-*.npz`` (row indices + features) atomically into the entry's ``.partial/shards``
folder. The driver copies each finished shard into the memory-mapped layer files, marks its
rows done and deletes it; the entry is renamed into place only when every row is done.

Failure handling:

* a worker that dies (killed, out of memory, node lost) is retried by Ray (``RAY_RETRIES``);
  if it keeps dying, the other shards still finish and are kept, and the error says to run
  the same command again, which computes only the missing shards (same batches, so the
  result is byte-identical to an uninterrupted run);
* a driver that dies leaves finished shard files behind; the next run merges them first;
* bad input (a NaN feature, an unreadable file) stops everything and leaves nothing, as in a
  local extraction.

Workers read the audio from the corpus root and write into the cache folder, so on a
multi-node cluster both must be on a shared filesystem (a local cluster needs nothing).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from perserbench.errors import PerserbenchError

RAY_RETRIES = 2  # a shard whose worker dies is rerun this often before the extraction gives up on it
SHARDS_PER_SLOT = 4  # default shards per CPU (GPU) of the cluster: small enough to balance, few enough to be cheap


class WorkersLost(PerserbenchError):
    """Some shards' workers died on every retry; the partial entry is kept for a resume."""

    resumable = True


@dataclass(frozen=True)
class ShardSpec:
    """What every shard task needs besides its rows: the upstream to load and where to write."""

    upstream: str
    expected_revision: str  # the driver's; a worker that loads another revision refuses
    device: str | None
    fp16: bool
    revision: str | None
    folder: str
    threads: int  # torch intra-op threads: the driver's, see extract_shard

    @property
    def gpu(self) -> bool:
        return self.upstream != "fbank" and (self.device or "").startswith("cuda")


@lru_cache(maxsize=2)
def _worker_upstream(upstream: str, device: str | None, fp16: bool, revision: str | None) -> Any:
    """The upstream, loaded once per worker process (Ray reuses workers across tasks)."""
    from perserbench.features import upstreams as ups

    return ups.resolve_upstream(upstream, device=device, fp16=fp16, revision=revision)


def extract_shard(spec: ShardSpec, index: int, batches: list[list[int]], paths: list[list[str]]) -> dict[str, Any]:
    """Ray task: embed ``batches`` (row indices, with their audio ``paths``) and write
    ``shard-<index>-*.npz`` atomically into ``spec.folder``; returns its path, rows and audio
    seconds."""
    import torch

    from perserbench.features.cache import embed_batch
    from perserbench.features.upstreams import canonical_name, describe

    # Float sums inside the model (matrix products, convolutions) are split over threads and
    # their rounding depends on how many: with the driver's thread count a CPU shard gives
    # the bytes a local extraction in the driver gives (1 vs 2 threads differ in the last bit).
    torch.set_num_threads(spec.threads)
    # Ray hides the GPUs a task did not ask for, so the one it got is always cuda:0 here.
    device = "cuda" if spec.gpu else spec.device
    model = _worker_upstream(spec.upstream, device, spec.fp16, spec.revision)
    got = str(describe(model)["revision"])
    if got != spec.expected_revision:
        raise PerserbenchError(f"a Ray worker loaded upstream {spec.upstream} at revision {got}, the driver at "
                               f"{spec.expected_revision}: give every node the same checkpoint (or pin --revision)")
    feats, seconds = [], 0.0
    for files in paths:
        out, batch_s = embed_batch(model, canonical_name(spec.upstream), files)
        feats.append(out)
        seconds += batch_s
    folder = Path(spec.folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"shard-{index:05d}-{uuid.uuid4().hex[:8]}.npz"
    tmp = folder / f".{final.name}.tmp"
    rows = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])
    with open(tmp, "wb") as handle:
        np.savez(handle, rows=rows, feats=np.concatenate(feats))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    return {"path": str(final), "rows": len(rows), "seconds": seconds}


def deal(batches: Sequence[np.ndarray], shards: int) -> list[list[np.ndarray]]:
    """Batches dealt round-robin into at most ``shards`` non-empty shards."""
    n = max(1, min(shards, len(batches)))
    return [list(batches[i::n]) for i in range(n) if batches[i::n]]


def _task_cpus(ray: Any, spec: ShardSpec) -> int:
    """CPUs a shard task reserves: its thread count (so tasks do not oversubscribe a node),
    at most the largest node's CPUs (else no node could ever run it); 1 beside a GPU."""
    if spec.gpu:
        return 1
    largest = max((int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1)
    return max(1, min(spec.threads, largest))


def _slots(ray: Any, spec: ShardSpec, cpus: int) -> int:
    resources = ray.cluster_resources()
    if spec.gpu:
        return max(1, int(resources.get("GPU", 1)))
    return max(1, int(resources.get("CPU", 1)) // cpus)


def run_on_ray(spec: ShardSpec, batches: Sequence[np.ndarray], paths: Sequence[str], address: str | None,
               shards: int | None, store: Callable[[np.ndarray, np.ndarray], None],
               progress: Callable[[float, int], None] | None) -> float:
    """Run ``batches`` as shard tasks; ``store(rows, feats)`` each finished shard (in the
    driver, in completion order); returns the audio seconds embedded."""
    from perserbench.raycluster import connect, task_cause, task_failure

    if not batches:
        return 0.0
    ray = connect(address)
    if spec.gpu and not ray.cluster_resources().get("GPU"):
        raise PerserbenchError(f"--device {spec.device} with --executor ray, but the Ray cluster has no GPUs "
                               "(its tasks would wait forever); start it on GPU nodes or use --device cpu")
    cpus = _task_cpus(ray, spec)
    n_shards = shards or SHARDS_PER_SLOT * _slots(ray, spec, cpus)
    options: dict[str, Any] = {"max_retries": RAY_RETRIES, "num_cpus": cpus}
    if spec.gpu:
        options["num_gpus"] = 1
    remote = ray.remote(**options)(extract_shard)  # the module attribute at call time
    pending = {}
    for index, shard in enumerate(deal(batches, n_shards)):
        rows = [b.tolist() for b in shard]
        pending[remote.remote(spec, index, rows, [[paths[r] for r in b] for b in rows])] = index
    submitted = len(pending)
    lost: list[str] = []
    total = 0.0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - Ray wraps every task failure; sorted out here
                    cause = task_cause(exc)
                    if isinstance(cause, PerserbenchError):
                        raise PerserbenchError(str(cause)) from None  # bad input: stop, keep nothing
                    if cause is not None:  # a bug or e.g. CUDA out of memory: stop, keep the finished shards
                        raise WorkersLost(f"a shard failed on Ray ({task_failure(exc)}); the finished shards are "
                                          "kept: fix the cause and run the same command again") from None
                    lost.append(task_failure(exc))  # a dead worker: let the other shards finish
                    continue
                path = Path(out["path"])
                with np.load(path) as shard:
                    store(shard["rows"], shard["feats"])
                path.unlink()
                total += out["seconds"]
                if progress:
                    progress(out["seconds"], out["rows"])
    except BaseException:
        for ref in pending:  # stop the other shards before the caller removes their folder
            ray.cancel(ref, force=True)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=30)
        raise
    if lost:
        raise WorkersLost(f"{len(lost)} of {submitted} shards failed on Ray ({lost[0]}); the finished shards are "
                          "kept: run the same command again to compute only the rest")
    return total


__all__ = ["RAY_RETRIES", "ShardSpec", "WorkersLost", "deal", "extract_shard", "run_on_ray"]
