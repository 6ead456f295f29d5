"""A damaged feature cache is detected and repaired, and extractions into one entry are locked
(issue 10): truncated, deleted, emptied and altered layer files; `features list`, `features
verify`, loading for a run, and repair by `features extract`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import write_crema_d

from perserbench.data import load_corpus
from perserbench.errors import PerserbenchError
from perserbench.features import upstreams
from perserbench.features.cache import entry_dir, extract_features, load_cached_features

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def cached(tmp_path: Path):
    """A CREMA-D fixture with extracted fbank features: (corpus, entry, features, CLI args)."""
    write_crema_d(tmp_path / "crema", actors=(1001, 1002), clips_per_actor=3)
    corpus = load_corpus("crema-d", root=str(tmp_path / "crema"), cache_dir=str(tmp_path / "cache"))
    report = extract_features(corpus, "fbank")
    extract = ["features", "extract", "--corpus", "crema-d", "--root", tmp_path / "crema", "--upstream", "fbank",
               "--cache-dir", tmp_path / "cache"]
    return corpus, report.entry, load_cached_features(corpus, "fbank"), extract


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the float data: same size, other content
    path.write_bytes(bytes(data))


DAMAGE: dict[str, tuple[Callable[[Path], None], str, bool]] = {
    # how, what the report says, whether a size check (every open) sees it
    "truncated": (_truncate, r"layer_00\.npy has \d+ bytes, not the \d+ recorded", True),
    "deleted": (lambda p: p.unlink(), r"layer_00\.npy is missing", True),
    "emptied": (lambda p: p.write_bytes(b""), r"layer_00\.npy has 0 bytes, not the \d+ recorded", True),
    "altered": (_flip_a_byte, r"layer_00\.npy does not match its recorded SHA-256 checksum", False),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_detected_and_extract_repairs_it(kind: str, cached, cli, monkeypatch) -> None:
    from rich.console import Console

    import perserbench.cli.features as cli_features

    monkeypatch.setattr(cli_features, "console", Console(width=400))
    corpus, entry, features, extract = cached
    cache = entry.parent.parent
    damage, message, on_open = DAMAGE[kind]
    damage(entry / "layer_00.npy")

    # `features list` (sizes) and `features verify` (checksums)
    code, out, err = cli("features", "list", "--cache-dir", cache)
    assert code == 0, err
    if on_open:
        assert "damaged" in out and "repair: perserbench features extract --corpus crema-d" in out
    else:
        assert "damaged" not in out and "complete" in out  # only checksums see same-size damage
    code, out, err = cli("features", "verify", "--cache-dir", cache)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "damaged" in out, (out, err)
    assert lines[0].startswith("error: 1 of 1 cache entries damaged (first: ")
    assert f"{entry}: " in lines[0] and "repair: perserbench features extract --corpus crema-d" in lines[0]
    assert re.search(message, lines[0]), lines[0]

    # what a run reads: refused with the repair command (sizes) instead of a crash
    if on_open:
        with pytest.raises(PerserbenchError, match=rf"cached features 'fbank' of corpus 'crema-d' are damaged "
                                                   rf"\(.*: {message}\); repair them: perserbench features extract"):
            load_cached_features(corpus, "fbank")

    # `features extract` rebuilds the entry: every forward pass again, nothing trusted
    before = upstreams.forward_count()
    code, out, err = cli(*extract)
    assert code == 0, err
    assert "repaired" in out and "the entry was damaged" in out and re.search(message, out), out
    assert upstreams.forward_count() > before
    np.testing.assert_array_equal(load_cached_features(corpus, "fbank"), features)
    code, out, err = cli("features", "verify", "--cache-dir", cache)
    assert code == 0 and "1 cache entries verified" in out, err
    code, out, _ = cli(*extract)
    assert code == 0 and "up to date" in out and "repaired" not in out


def test_a_lost_manifest_is_listed_and_rebuilt(cached, cli) -> None:
    corpus, entry, features, extract = cached
    (entry / "manifest.json").unlink()
    code, out, _ = cli("features", "list", "--cache-dir", entry.parent.parent)
    assert code == 0 and "damaged" in out and "manifest.json is missing or unreadable" in out
    with pytest.raises(PerserbenchError, match="no cached features 'fbank'.*run: perserbench features extract"):
        load_cached_features(corpus, "fbank")
    code, _, err = cli(*extract)
    assert code == 0, err
    np.testing.assert_array_equal(load_cached_features(corpus, "fbank"), features)


def test_nan_from_an_upstream_names_the_clip_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    write_crema_d(tmp_path / "crema", actors=(1001,), clips_per_actor=3)
    corpus = load_corpus("crema-d", root=str(tmp_path / "crema"), cache_dir=str(tmp_path / "cache"))
    real = upstreams.FbankUpstream._forward
    victim = corpus.utterances[0].audio_path  # first in the (stable, equal-length) batch order

    def poisoned(self, waves):
        out = real(self, waves)
        out[0, 0, 0] = np.nan
        return out

    monkeypatch.setattr(upstreams.FbankUpstream, "_forward", poisoned)
    with pytest.raises(PerserbenchError, match=rf"upstream fbank gave NaN or inf features for audio file "
                                               rf"{re.escape(victim)}; check that file"):
        extract_features(corpus, "fbank", batch_seconds=0.3)  # one clip per batch
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


def test_nan_in_cached_features_is_refused_at_load_naming_the_utterance(cached, tmp_path: Path) -> None:
    corpus, entry, _, _ = cached
    manifest = json.loads((entry / "manifest.json").read_text())
    row = manifest["ids"].index(corpus.utterances[2].id)
    layer = np.load(entry / "layer_00.npy", mmap_mode="r+")
    layer[row, 3] = np.inf
    layer.flush()
    del layer
    chosen = [c for c, n in zip(corpus.vocabulary, corpus.annotations.labels.sum(axis=0)) if n]
    task = tmp_path / "t.toml"
    task.write_text(f"""name = "t"\nversion = "1"\n[corpus]\nname = "crema-d"\nfeatures = "fbank"
labels = {json.dumps(chosen)}
options = {{ root = "{tmp_path / 'crema'}", cache_dir = "{tmp_path / 'cache'}" }}
[listeners]\nfolds = 1\n[utterances]\nsplit = "speaker"\nheldout = ["1002"]\n[episodes]\nshots = [1]
query = 2\nmin_query = 1\nepisodes = 1\n""")
    from perserbench.tasks import load_task

    with pytest.raises(PerserbenchError, match=rf"features 'fbank' of utterance '{corpus.utterances[2].id}' \(audio "
                                               r".*\) contain NaN or inf .*features extract .* --force"):
        load_task(task)


def _holder(entry: Path) -> subprocess.Popen:
    """Another process holding the entry's extraction lock (as a running extraction would)."""
    code = ("import sys, time; from pathlib import Path; from perserbench.features.cache import _extraction_lock\n"
            "with _extraction_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(entry), "features", "extract", "--corpus", "crema-d"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_extraction_is_told_who_holds_the_entry(cached, cli) -> None:
    corpus, entry, features, extract = cached
    extract = [*extract, "--force"]  # real work to do, so the lock matters
    holder = _holder(entry)
    try:
        code, _, err = cli(*extract)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: cache entry {entry} is being extracted by another process (pid "
                                   f"{holder.pid} on ")
        assert "features extract --corpus crema-d" in lines[0] and "wait for it to finish or stop it" in lines[0]
        np.testing.assert_array_equal(load_cached_features(corpus, "fbank"), features)  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder leaves no stale lock
        holder.wait(timeout=30)
    code, _, err = cli(*extract)
    assert code == 0, err
    assert not any(p.name.endswith(".lock") for p in entry.parent.iterdir())


def test_the_lock_is_taken_for_the_whole_extraction(cached, monkeypatch) -> None:
    corpus, entry, _, _ = cached
    real = upstreams.FbankUpstream._forward
    seen: list[str] = []

    def reenter(self, waves):
        if not seen:
            with pytest.raises(PerserbenchError) as info:
                extract_features(corpus, "fbank", force=True)
            seen.append(str(info.value))
        return real(self, waves)

    monkeypatch.setattr(upstreams.FbankUpstream, "_forward", reenter)
    start = time.time()
    extract_features(corpus, "fbank", force=True)
    assert seen and f"pid {os.getpid()} on " in seen[0] and time.time() - start < 60
    assert entry_dir(corpus, "fbank") == entry
