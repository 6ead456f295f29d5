"""The feature cache: upstream features computed once per (corpus, root, feature key) and read
by every run after that (DESIGN §4).

Layout, under :func:`cache_root` (``$PERSERBENCH_CACHE``, else ``~/.cache/perserbench``)::

    <corpus>-<root digest>/<key>/manifest.json      what the arrays are (see below)
    <corpus>-<root digest>/<key>/layer_00.npy ...   one float32 [N, D] array per layer
    <corpus>-<root digest>/<key>.partial/           an extraction in progress (layer files, the
                                                    done mask, the batch plan batches.json,
                                                    finished Ray shards in shards/)

``manifest.json`` records the corpus name and root, the upstream (name, revision, layers,
dim), the utterance ids in row order, per audio file its size and modification time (which is
how an unchanged corpus is recognised without reading any audio), and per layer file its size
and SHA-256, which is how a damaged entry is recognised: sizes are checked whenever an entry
is opened (a run, ``features list``), checksums by ``features verify`` and by every
``features extract``, which rebuilds a damaged entry.

An extraction holds ``<corpus>-<root digest>/.<key>.lock`` (an advisory ``flock``, released
by the kernel when the process dies, so a killed run leaves no stale lock): a second
extraction into the same entry is refused with the pid, host and command of the one running.

Why this shape: per-layer ``.npy`` files open as memory maps (``np.load(mmap_mode="r")``), so
a 13-layer × 768-d cache of a 100k-utterance corpus costs nothing until rows are read;
and an extraction writes into preallocated memory maps in ``<key>.partial`` with a
``done.npy`` row mask saved after every batch, so a killed extraction resumes at the first
unfinished batch. The finished folder is moved into place with one ``rename``: readers see
the old complete entry or the new complete entry, never a partial one.

Memory: a run never builds an entry's whole ``[N, L, D]`` array unless it is small. Up to
:data:`IN_MEMORY_BYTES` of float32 (128 MiB, one batch of
:class:`~perserbench.featurerows.FeatureRows`) :func:`load_cached_features` returns an array in
memory; a larger entry (MSP-Podcast with WavLM-Large is 15 GB as float32) comes back as a
:class:`~perserbench.featurerows.MappedFeatures` over the layer files and the corpus-row →
cache-row map, read a batch at a time with positioned reads (no memory map stays open). The
values are the stored float32 values either way, so results do not depend on which one a run
gets. Small entries stay in memory because an array is a snapshot of what was checked at load,
immune to anything later done to the files in place; a mapped entry keeps its files open, which
covers replacement (a re-extraction renames a new entry into place) but not damage in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perserbench.data.corpus import Corpus
from perserbench.errors import PerserbenchError
from perserbench.results import write_atomic

if TYPE_CHECKING:
    from perserbench.featurerows import FeatureArray

MANIFEST = "manifest.json"
PLAN = "plan.json"
DONE = "done.npy"
BATCHES = "batches.json"  # the batch plan of an extraction in progress (resumes batch for batch)
SHARDS = "shards"  # finished Ray shards not yet copied into the layer files
EXECUTORS = ("local", "ray")
FORMAT_VERSION = 2  # 2: per-layer-file size and SHA-256 (damage detection)
DEFAULT_BATCH_SECONDS = 32.0
IN_MEMORY_BYTES = 128 * 2**20  # float32 size up to which a run holds an entry in memory (one FeatureRows batch)

Progress = Callable[[float, int], None]  # (audio seconds done in this call, rows done in this call)


def cache_root(override: str | Path | None = None) -> Path:
    """The cache folder: ``override``, else ``$PERSERBENCH_CACHE``, else ``~/.cache/perserbench``."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("PERSERBENCH_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "perserbench"


def default_key(upstream: str) -> str:
    """The feature key tasks name: ``fbank``; a hub id's model name (``microsoft/wavlm-base-plus``
    → ``wavlm-base-plus``); a local directory's folder name."""
    return Path(upstream.rstrip("/\\")).name or upstream


def _check_key(key: str) -> str:
    if not key or key.startswith(".") or any(c in key for c in "/\\") or key.endswith(".partial"):
        raise PerserbenchError(f"feature key {key!r} must be a plain name (no '/', no leading '.')")
    return key


def _corpus_root(corpus: Corpus) -> str:
    root = corpus.metadata.get("root")
    return str(Path(root).resolve()) if root else "<no-root>"


def entry_dir(corpus: Corpus, key: str, cache_dir: str | Path | None = None) -> Path:
    """Folder of the cache entry for ``corpus`` (name and root) and feature ``key``."""
    root = _corpus_root(corpus)
    digest = hashlib.sha256(root.encode()).hexdigest()[:10]
    base = cache_dir or corpus.metadata.get("cache_dir")
    return cache_root(base) / f"{corpus.name}-{digest}" / _check_key(key)


def _partial_dir(entry: Path) -> Path:
    return entry.with_name(entry.name + ".partial")


def _audio_stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _audio_rows(corpus: Corpus) -> list[tuple[str, str]]:
    rows = [(u.id, u.audio_path) for u in corpus.utterances if u.audio_path]
    if not rows:
        raise PerserbenchError(
            f"corpus {corpus.name!r} has no audio paths (e.g. a manifest with feature rows); nothing to extract"
        )
    if len(rows) != len(corpus.utterances):
        missing = next(u.id for u in corpus.utterances if not u.audio_path)
        raise PerserbenchError(f"corpus {corpus.name!r}: utterance {missing!r} has no audio path")
    return rows


@dataclass(frozen=True)
class ExtractReport:
    """What one ``extract_features`` call did. ``forwards`` counts upstream batches run."""

    entry: Path
    key: str
    upstream: str
    revision: str
    n_utterances: int
    extracted: int
    reused: int
    resumed: int
    forwards: int
    audio_seconds: float
    wall_s: float
    up_to_date: bool
    repaired: str | None = None  # the damage found in the old entry, which was rebuilt


def _up_to_date(manifest: dict[str, Any] | None, rows: list[tuple[str, str]], upstream: str,
                revision: str | None) -> bool:
    """True when the entry holds every row with unchanged audio from the same upstream."""
    if manifest is None or manifest.get("format") != FORMAT_VERSION:
        return False
    up = manifest.get("upstream", {})
    if up.get("name") != upstream or (revision is not None and up.get("revision") != revision):
        return False
    stats = {a["id"]: (a["size"], a["mtime_ns"]) for a in manifest.get("audio", [])}
    return all(stats.get(uid) == _audio_stat(path) for uid, path in rows)


def _layer_file(folder: Path, layer: int) -> Path:
    return folder / f"layer_{layer:02d}.npy"


def extract_features(corpus: Corpus, upstream: str, key: str | None = None, *,
                     cache_dir: str | Path | None = None, device: str | None = None, fp16: bool = False,
                     batch_seconds: float = DEFAULT_BATCH_SECONDS, revision: str | None = None,
                     force: bool = False, progress: Progress | None = None,
                     on_plan: Callable[[float, int], None] | None = None, executor: str = "local",
                     address: str | None = None, shards: int | None = None) -> ExtractReport:
    """Compute (or bring up to date) the cached features of every utterance of ``corpus``.

    ``upstream`` is ``fbank``, a hub id or a local checkpoint directory; ``key`` defaults to
    :func:`default_key`. Nothing is recomputed for rows whose audio (size, mtime) and upstream
    are unchanged; an unchanged corpus loads no model and runs no forward pass at all. A
    ``.partial`` folder left by a killed run is resumed when it describes the same work.
    ``on_plan(total_seconds, total_rows)`` is called once the work to do is known (for a
    progress bar), ``progress(seconds, rows)`` after every batch (every shard on Ray).

    ``executor="ray"`` splits the batches over ``shards`` Ray tasks (default: four per CPU,
    or per GPU with a CUDA ``device``, of the cluster at ``address``); see
    :mod:`perserbench.features.sharded`. The batches and the thread count are the same as a
    local extraction's in this process, so the cached arrays are byte-identical to one.
    """
    start = time.perf_counter()
    if batch_seconds <= 0:
        raise PerserbenchError(f"--batch-seconds must be positive, got {batch_seconds}")
    if executor not in EXECUTORS:
        raise PerserbenchError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if shards is not None and shards < 1:
        raise PerserbenchError(f"--shards must be at least 1, got {shards}")
    key = _check_key(key or default_key(upstream))
    rows = _audio_rows(corpus)
    entry = entry_dir(corpus, key, cache_dir)
    try:
        with _extraction_lock(entry):
            return _extract(corpus, upstream, key, rows, entry, start, device=device, fp16=fp16,
                            batch_seconds=batch_seconds, revision=revision, force=force, progress=progress,
                            on_plan=on_plan, executor=executor, address=address, shards=shards)
    finally:
        with contextlib.suppress(OSError):
            entry.parent.rmdir()  # only if empty: a refused extraction leaves no folder behind


def _extract(corpus: Corpus, upstream: str, key: str, rows: list[tuple[str, str]], entry: Path, start: float, *,
             device: str | None, fp16: bool, batch_seconds: float, revision: str | None, force: bool,
             progress: Progress | None, on_plan: Callable[[float, int], None] | None, executor: str,
             address: str | None, shards: int | None) -> ExtractReport:
    """:func:`extract_features` under the entry's lock."""
    from perserbench.features import upstreams as ups
    from perserbench.features.audio import audio_info

    name = ups.canonical_name(upstream)
    cheap = ups.cheap_revision(upstream) if revision is None else revision
    old = None if force else _read_json(entry / MANIFEST)
    repaired = None
    if old is not None:
        repaired = entry_damage(entry, old, checksums=True)
        if repaired is not None:
            old = None  # nothing of a damaged entry is trusted: rebuild it whole
    forwards0 = ups.forward_count()

    if _up_to_date(old, rows, name, cheap):
        if on_plan:
            on_plan(0.0, 0)
        return ExtractReport(entry, key, name, str(old["upstream"]["revision"]), len(rows), 0, len(rows), 0, 0,
                             0.0, time.perf_counter() - start, True)

    if executor == "ray":  # the driver only describes the model; the workers load it on their device
        model = ups.resolve_upstream(upstream, device=None if name == "fbank" else "cpu", revision=revision)
    else:
        model = ups.resolve_upstream(upstream, device=device, fp16=fp16, revision=revision)
    desc = ups.describe(model)
    desc["name"] = name
    old_ok = (old is not None and old.get("format") == FORMAT_VERSION
              and old["upstream"].get("name") == name and old["upstream"].get("revision") == desc["revision"]
              and old["upstream"].get("layers") == desc["layers"] and old["upstream"].get("dim") == desc["dim"])

    # The plan: the corpus's rows, plus rows of the old entry still valid (another option set of
    # the same corpus, e.g. CREMA-D's audio-visual clips), so alternating options never evicts.
    plan_ids = [uid for uid, _ in rows]
    plan_paths = dict(rows)
    old_rows: dict[str, int] = {}
    if old_ok:
        old_audio = {a["id"]: a for a in old["audio"]}
        for i, uid in enumerate(old["ids"]):
            a = old_audio[uid]
            path = a["path"] if os.path.isabs(a["path"]) else os.path.join(old["root"], a["path"])
            if _audio_stat(path) == (a["size"], a["mtime_ns"]):
                old_rows[uid] = i
                if uid not in plan_paths:
                    plan_ids.append(uid)
                    plan_paths[uid] = path
    stats = {uid: _audio_stat(plan_paths[uid]) for uid in plan_ids}
    absent = [plan_paths[u] for u in plan_ids if stats[u] is None]
    if absent:
        raise PerserbenchError(f"{len(absent)} audio files are missing (first: {absent[0]}); "
                               "load the corpus with missing_audio=skip to leave them out")
    root = _corpus_root(corpus)
    audio = [{"id": u, "path": _relative(plan_paths[u], root), "size": stats[u][0], "mtime_ns": stats[u][1]}
             for u in plan_ids]
    plan = {"format": FORMAT_VERSION, "corpus": corpus.name, "root": root, "key": key, "upstream": desc,
            "ids": plan_ids, "audio": audio}

    # Validate every file to read before creating anything (corrupt and truncated files fail
    # here, in seconds, not hours in, and leave no trace); the lengths also drive batching.
    seconds_of = {u: audio_info(plan_paths[u]).seconds for u in plan_ids if u not in old_rows}

    partial = _partial_dir(entry)
    n, n_layers, dim = len(plan_ids), int(desc["layers"]), int(desc["dim"])
    resumed_rows = 0
    if partial.exists() and (force or _read_json(partial / PLAN) != plan):
        shutil.rmtree(partial)  # a different job (corpus or upstream changed) or --force: start over
    if partial.exists() and (partial / DONE).is_file():
        done = np.load(partial / DONE)
        layers = [np.load(_layer_file(partial, i), mmap_mode="r+") for i in range(n_layers)]
        _merge_shards(partial, layers, done)  # finished by Ray workers before a crash
        resumed_rows = int(done.sum())
    else:
        partial.mkdir(parents=True, exist_ok=True)
        layers = [np.lib.format.open_memmap(_layer_file(partial, i), mode="w+", dtype=np.float32, shape=(n, dim))
                  for i in range(n_layers)]
        done = np.zeros(n, dtype=bool)
        if old_rows:
            index = {u: i for i, u in enumerate(plan_ids)}
            src = np.array([old_rows[u] for u in plan_ids if u in old_rows], dtype=np.int64)
            dst = np.array([index[u] for u in plan_ids if u in old_rows], dtype=np.int64)
            for i in range(n_layers):
                layers[i][dst] = np.load(_layer_file(entry, i), mmap_mode="r")[src]
                layers[i].flush()
            done[dst] = True
        write_atomic(partial / PLAN, json.dumps(plan))
        _save_done(partial, done)
    reused = int(done.sum()) - resumed_rows

    todo = np.flatnonzero(~done)

    def store(batch: np.ndarray, feats: np.ndarray) -> None:
        for i in range(n_layers):
            layers[i][batch] = feats[:, i, :]
            layers[i].flush()
        done[batch] = True
        _save_done(partial, done)

    try:
        seconds = np.array([seconds_of[plan_ids[r]] for r in todo], dtype=np.float64)
        if on_plan:
            on_plan(float(seconds.sum()), len(todo))
        batches = _batch_plan(partial, todo, seconds, batch_seconds)
        if executor == "ray":
            import torch

            from perserbench.features.sharded import ShardSpec, run_on_ray

            spec = ShardSpec(upstream, str(desc["revision"]), device, fp16, revision, str(partial / SHARDS),
                             torch.get_num_threads())
            audio_total = run_on_ray(spec, batches, [plan_paths[u] for u in plan_ids], address, shards,
                                     lambda rows, feats: store(rows, feats), progress)
        else:
            audio_total = 0.0
            for batch in batches:
                feats, batch_s = embed_batch(model, name, [plan_paths[plan_ids[r]] for r in batch])
                store(batch, feats)
                audio_total += batch_s
                if progress:
                    progress(batch_s, len(batch))
    except PerserbenchError as exc:
        # Bad input (a corrupt file): the user must fix it and the resulting features would
        # differ anyway, so leave nothing behind rather than a partial entry. Lost Ray workers
        # are not bad input: the partial entry stays, and the same command resumes it.
        layers.clear()  # closes the memory maps
        if not getattr(exc, "resumable", False):
            shutil.rmtree(partial, ignore_errors=True)
        raise
    layers.clear()  # closes the memory maps
    files = [{"name": _layer_file(partial, i).name, "size": _layer_file(partial, i).stat().st_size,
              "sha256": _sha256(_layer_file(partial, i))} for i in range(n_layers)]
    manifest = {**plan, "shapes": {"rows": n, "layers": n_layers, "dim": dim}, "layer_files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(partial / MANIFEST, json.dumps(manifest, indent=1))
    (partial / DONE).unlink()
    (partial / PLAN).unlink()
    (partial / BATCHES).unlink(missing_ok=True)
    shutil.rmtree(partial / SHARDS, ignore_errors=True)
    _replace_dir(partial, entry)
    return ExtractReport(entry, key, name, str(desc["revision"]), len(rows), len(todo), reused, resumed_rows,
                         ups.forward_count() - forwards0, audio_total, time.perf_counter() - start, False, repaired)


def embed_batch(model: Any, name: str, paths: list[str]) -> tuple[np.ndarray, float]:
    """Features ``[B, L, D]`` of one batch of audio files and its audio seconds; refuses NaN
    or infinite features, naming the file. Local extraction and Ray workers both call this,
    so a batch gives the same bytes wherever it runs."""
    from perserbench.features.audio import TARGET_SR

    waves = [_load(path, TARGET_SR) for path in paths]
    feats = model.embed(waves)
    finite = np.isfinite(feats).all(axis=(1, 2))
    if not finite.all():
        bad = paths[int(np.flatnonzero(~finite)[0])]
        raise PerserbenchError(f"upstream {name} gave NaN or inf features for audio file {bad}; "
                               "check that file (silence, clipping) or leave it out")
    return feats, float(sum(len(w) for w in waves)) / TARGET_SR


def _batch_plan(partial: Path, todo: np.ndarray, seconds: np.ndarray, budget: float) -> list[np.ndarray]:
    """The batches of the rows still to do. An interrupted extraction resumes its recorded
    plan (whole batches are done or not), so the features of a resumed or sharded extraction
    are byte-identical to an uninterrupted local one: a row's features depend on the batch it
    is padded in. A different ``--batch-seconds`` (e.g. after running out of GPU memory)
    re-plans the remaining rows."""
    saved = _read_json(partial / BATCHES)
    left = set(todo.tolist())
    if saved is not None and saved.get("batch_seconds") == budget:
        batches = [np.array([r for r in b if r in left], dtype=np.int64) for b in saved["batches"]]
        batches = [b for b in batches if len(b)]
        if sum(len(b) for b in batches) == len(left):
            return batches
    batches = _batches(todo, seconds, budget)
    write_atomic(partial / BATCHES, json.dumps({"batch_seconds": budget, "batches": [b.tolist() for b in batches]}))
    return batches


def _merge_shards(partial: Path, layers: list[np.ndarray], done: np.ndarray) -> None:
    """Copy finished shard files (written atomically by Ray workers whose driver died before
    copying them) into the layer files, then delete them."""
    folder = partial / SHARDS
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("shard-*.npz")):
        with np.load(path) as shard:
            rows, feats = shard["rows"], shard["feats"]
        if feats.shape != (len(rows), len(layers), layers[0].shape[1]) or rows.max(initial=-1) >= len(done):
            path.unlink()  # not this plan's shard: recompute those rows
            continue
        for i, layer in enumerate(layers):
            layer[rows] = feats[:, i, :]
            layer.flush()
        done[rows] = True
        _save_done(partial, done)
        path.unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_damage(entry: Path, manifest: dict[str, Any], checksums: bool = False) -> str | None:
    """What is wrong with the files of a complete entry, or ``None``: a layer file missing,
    of another size than recorded (truncated, emptied), or — with ``checksums``, which reads
    every byte — with other content. An entry of an older cache format counts as damaged,
    since it records no sizes to check."""
    if not (entry / MANIFEST).is_file() or "format" not in manifest:
        return f"{MANIFEST} is missing or unreadable"
    if manifest.get("format") != FORMAT_VERSION:
        return f"written by an older perserbench (cache format {manifest.get('format')!r}, now {FORMAT_VERSION})"
    records = manifest.get("layer_files")
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and {"size", "sha256"} <= set(r) for r in records):
        return f"{MANIFEST} does not list its layer files"
    for record in records:
        path = entry / record["name"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{record['name']} is missing"
        if size != record["size"]:
            return f"{record['name']} has {size} bytes, not the {record['size']} recorded"
        if checksums and _sha256(path) != record["sha256"]:
            return f"{record['name']} does not match its recorded SHA-256 checksum"
    return None


def _lock_holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, since {info['started']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


@contextlib.contextmanager
def _extraction_lock(entry: Path) -> Iterator[None]:
    """Hold ``.<key>.lock`` beside the entry for one extraction; refuse when another holds it.

    ``flock`` (not a lock *file* whose existence is the lock) so that a killed extraction
    never leaves a stale lock; the file is removed on release, and a lock taken on a file that
    was removed meanwhile is retaken on the new one."""
    lock = entry.with_name(f".{entry.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PerserbenchError(
                f"cache entry {entry} is being extracted by another process ({_lock_holder(lock)}); wait for "
                "it to finish or stop it, then run again"
            ) from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed the file as we opened it: take the new one
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join(["perserbench", *sys.argv[1:]]) if sys.argv else "?"}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _relative(path: str, root: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(Path(path).resolve())


def _load(path: str, sr: int) -> np.ndarray:
    from perserbench.features.audio import load_audio

    return load_audio(path, sr)


def _save_done(folder: Path, done: np.ndarray) -> None:
    tmp = folder / f".{DONE}.tmp"
    with open(tmp, "wb") as handle:
        np.save(handle, done)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / DONE)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing an existing ``dst`` (renamed aside, then deleted)."""
    trash = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    if dst.exists():
        os.replace(dst, trash)
    os.replace(src, dst)
    shutil.rmtree(trash, ignore_errors=True)


def _batches(rows: np.ndarray, seconds: np.ndarray, budget: float) -> list[np.ndarray]:
    """Group rows of similar length so that ``batch size × longest clip`` stays within
    ``budget`` seconds: sorting by length keeps padding (wasted compute) small."""
    order = np.argsort(seconds, kind="stable")
    batches: list[np.ndarray] = []
    current: list[int] = []
    longest = 0.0
    for j in order:
        s = float(seconds[j])
        if current and (len(current) + 1) * max(longest, s) > budget:
            batches.append(rows[np.array(current)])
            current, longest = [], 0.0
        current.append(int(j))
        longest = max(longest, s)
    if current:
        batches.append(rows[np.array(current)])
    return batches


def extract_command(corpus: Corpus, key: str) -> str:
    """The command that (re)builds the cache entry of ``corpus`` and ``key`` (for error messages)."""
    root = corpus.metadata.get("manifest") or corpus.metadata.get("root") or "DIR"
    return f"perserbench features extract --corpus {corpus.name} --root {root} --upstream UPSTREAM --key {key}"


def load_cached_features(corpus: Corpus, key: str, cache_dir: str | Path | None = None) -> FeatureArray:
    """The cached features ``[N_utterances, L, D]`` of ``corpus`` (row order = its utterances),
    float32: up to :data:`IN_MEMORY_BYTES` an array in memory, beyond that a
    :class:`~perserbench.featurerows.MappedFeatures` over the layer files, which reads rows on
    demand (the same floats: module docstring, "Memory").

    Errors name the command to run when the features were never extracted, when utterances
    are missing from the cache, or when an audio file changed since extraction.
    """
    entry = entry_dir(corpus, key, cache_dir)
    manifest = _read_json(entry / MANIFEST)
    if manifest is None:
        hint = " (an extraction is in progress or was interrupted; run it again to resume)" \
            if _partial_dir(entry).exists() else ""
        raise PerserbenchError(
            f"no cached features {key!r} for corpus {corpus.name!r} at {_corpus_root(corpus)} in "
            f"{entry.parent.parent}{hint}; run: {extract_command(corpus, key)}"
        )
    damage = entry_damage(entry, manifest)
    if damage is not None:
        raise PerserbenchError(f"cached features {key!r} of corpus {corpus.name!r} are damaged ({entry}: {damage}); "
                               f"repair them: {extract_command(corpus, key)}")
    index = {u: i for i, u in enumerate(manifest["ids"])}
    audio = {a["id"]: a for a in manifest["audio"]}
    rows = np.empty(len(corpus.utterances), dtype=np.int64)
    missing = []
    for j, utt in enumerate(corpus.utterances):
        i = index.get(utt.id)
        if i is None:
            missing.append(utt.id)
            continue
        rows[j] = i
        if utt.audio_path and _audio_stat(utt.audio_path) != (audio[utt.id]["size"], audio[utt.id]["mtime_ns"]):
            raise PerserbenchError(
                f"audio file {utt.audio_path} changed since features {key!r} were extracted; "
                f"run again: {extract_command(corpus, key)}"
            )
    if missing:
        raise PerserbenchError(
            f"{len(missing)} utterances of corpus {corpus.name!r} have no cached features {key!r} "
            f"(first: {missing[0]}); run: {extract_command(corpus, key)}"
        )
    from perserbench.featurerows import MappedFeatures  # torch: only when features are read

    features = MappedFeatures([np.load(entry / record["name"], mmap_mode="r") for record in manifest["layer_files"]],
                              rows)
    if 4 * features.shape[0] * features.shape[1] * features.shape[2] > IN_MEMORY_BYTES:
        return features
    return features[:]


@dataclass(frozen=True)
class EntryInfo:
    """One cache entry as listed by ``perserbench features list``."""

    path: Path
    corpus: str
    root: str
    key: str
    upstream: str
    revision: str
    rows: int
    layers: int
    dim: int
    complete: bool
    bytes: int
    damage: str | None = None  # see entry_damage; only complete entries are checked

    @property
    def repair_command(self) -> str:
        return (f"perserbench features extract --corpus {self.corpus} --root {self.root} "
                f"--upstream {self.upstream} --key {self.key}")


def list_entries(cache_dir: str | Path | None = None, checksums: bool = False) -> list[EntryInfo]:
    """Every complete entry and every interrupted (``.partial``) extraction in the cache, with
    the damage of complete ones (file sizes; with ``checksums`` every byte, as
    ``features verify``)."""
    base = cache_root(cache_dir)
    out = []
    for folder in sorted(base.glob("*/*")):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        complete = not folder.name.endswith(".partial")
        meta = _read_json(folder / (MANIFEST if complete else PLAN))
        if meta is None and complete:  # a folder without a readable manifest: report, don't hide it
            meta = {"corpus": folder.parent.name.rsplit("-", 1)[0], "key": folder.name, "ids": []}
        elif meta is None:
            continue
        up = meta.get("upstream", {})
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        rows = len(meta.get("ids", []))
        damage = entry_damage(folder, meta, checksums) if complete else None
        out.append(EntryInfo(folder, str(meta.get("corpus")), str(meta.get("root")), str(meta.get("key")),
                             str(up.get("name")), str(up.get("revision")), rows, int(up.get("layers", 0)),
                             int(up.get("dim", 0)), complete, size, damage))
    return out


__all__ = ["EntryInfo", "ExtractReport", "cache_root", "default_key", "entry_damage", "entry_dir", "extract_command",
           "extract_features", "list_entries", "load_cached_features"]
