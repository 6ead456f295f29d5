"""Audio input, upstreams and the feature cache (resume, no-op second run, bad audio)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_fixtures import (
    write_crema_d,
    write_iemocap,
    write_manifest,
    write_tiny_wavlm,
    write_wav,
)
from typer.testing import CliRunner

from perserbench.cli import app
from perserbench.data import load_corpus
from perserbench.errors import PerserbenchError
from perserbench.features import upstreams
from perserbench.features.audio import TARGET_SR, load_audio
from perserbench.features.cache import (
    entry_dir,
    extract_features,
    list_entries,
    load_cached_features,
)


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_wavlm(tmp_path_factory.mktemp("up") / "tiny-wavlm")


@pytest.fixture()
def crema(tmp_path: Path):
    write_crema_d(tmp_path / "crema", actors=(1001, 1002), clips_per_actor=5)
    return load_corpus("crema-d", root=str(tmp_path / "crema"), cache_dir=str(tmp_path / "cache"))


def _cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


# ------------------------------------------------------------------------------------ audio
def test_load_audio_mono_and_resampled(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", 0.5, 22_050, seed=1, channels=2)
    wave = load_audio(tmp_path / "a.wav")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == pytest.approx(0.5 * TARGET_SR, abs=2)
    # A 440 Hz tone keeps its frequency through resampling from 44.1 kHz.
    t = np.arange(44_100) / 44_100
    sf.write(str(tmp_path / "tone.wav"), 0.5 * np.sin(2 * np.pi * 440 * t), 44_100)
    tone = load_audio(tmp_path / "tone.wav")
    assert len(tone) == TARGET_SR
    assert np.argmax(np.abs(np.fft.rfft(tone))) == 440  # 1 s of audio: bin index = Hz


def test_corrupt_truncated_and_empty_audio(tmp_path: Path) -> None:
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(PerserbenchError, match=r"junk\.wav is unreadable or corrupt"):
        load_audio(tmp_path / "junk.wav")
    write_wav(tmp_path / "cut.wav", 0.5, 16_000, seed=2)
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(PerserbenchError, match=r"cut\.wav is truncated: its data chunk declares"):
        load_audio(tmp_path / "cut.wav")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(PerserbenchError, match=r"empty\.wav is empty"):
        load_audio(tmp_path / "empty.wav")


# -------------------------------------------------------------------------------- upstreams
def test_fbank_statistics_upstream(tmp_path: Path) -> None:
    up = upstreams.resolve_upstream("fbank")
    quiet = np.random.default_rng(0).normal(scale=0.01, size=8000).astype(np.float32)
    out = up.embed([quiet, quiet * 10])
    assert out.shape == (2, 1, 160)
    # mean log-energy per bin rises by log(100) when the amplitude rises 10x; std is unchanged
    np.testing.assert_allclose(out[1, 0, :80] - out[0, 0, :80], np.log(100.0), atol=0.05)
    np.testing.assert_allclose(out[1, 0, 80:], out[0, 0, 80:], atol=0.05)


def test_hf_upstream_pools_every_layer_over_valid_frames_only(tiny_wavlm: Path) -> None:
    up = upstreams.resolve_upstream(str(tiny_wavlm), device="cpu")
    assert (up.num_layers, up.dim) == (3, 32)  # embeddings + 2 transformer layers
    rng = np.random.default_rng(0)
    short, long = (rng.normal(scale=0.1, size=n).astype(np.float32) for n in (4000, 12000))
    alone = up.embed([short])
    padded = up.embed([short, long])  # short is zero-padded to the long clip in this batch
    np.testing.assert_allclose(padded[0], alone[0], atol=1e-4)
    assert not np.allclose(padded[1], padded[0], atol=1e-3)


def test_hf_upstream_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PerserbenchError, match="upstream directory .* does not exist"):
        upstreams.resolve_upstream(str(tmp_path / "nope"))
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(PerserbenchError, match="cannot load upstream from .*save_pretrained output"):
        upstreams.resolve_upstream(str(tmp_path / "empty-model"))
    with pytest.raises(PerserbenchError, match="--fp16 needs a CUDA device|CUDA is not available"):
        upstreams.resolve_upstream(str(tmp_path / "empty-model"), device="cuda", fp16=True)


def test_hub_id_offline_tells_user_to_pass_a_local_directory(tmp_path: Path) -> None:
    code = ("from perserbench.features.upstreams import resolve_upstream\n"
            "from perserbench.errors import PerserbenchError\n"
            "try:\n    resolve_upstream('microsoft/wavlm-base-plus', device='cpu')\n"
            "except PerserbenchError as e:\n    print('ERR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, timeout=120).stdout
    assert "ERR cannot load upstream 'microsoft/wavlm-base-plus'" in out
    assert "offline mode (HF_HUB_OFFLINE) is set" in out and "pass that local directory: --upstream DIR" in out


# ------------------------------------------------------------------------------------ cache
def test_second_extraction_runs_no_forward_and_features_round_trip(crema, tmp_path: Path) -> None:
    first = extract_features(crema, "fbank", batch_seconds=1.0)
    assert (first.extracted, first.reused, first.up_to_date) == (10, 0, False)
    assert first.forwards >= 3  # 10 clips of 0.25 s in batches of at most 1 s of padded audio
    before = upstreams.forward_count()
    again = extract_features(crema, "fbank")
    assert again.up_to_date and again.forwards == 0 and upstreams.forward_count() == before
    feats = load_cached_features(crema, "fbank")
    assert feats.shape == (10, 1, 160)
    direct = upstreams.FbankUpstream().embed([load_audio(u.audio_path) for u in crema.utterances])
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-5)
    manifest = json.loads((first.entry / "manifest.json").read_text())
    assert manifest["corpus"] == "crema-d" and manifest["shapes"] == {"rows": 10, "layers": 1, "dim": 160}
    assert manifest["upstream"]["revision"].startswith("kaldi-fbank80")
    assert {a["id"] for a in manifest["audio"]} == {u.id for u in crema.utterances}
    assert all(a["size"] > 0 and a["mtime_ns"] > 0 for a in manifest["audio"])
    assert [e.key for e in list_entries(tmp_path / "cache")] == ["fbank"]


def test_changed_audio_recomputes_only_that_clip(crema) -> None:
    extract_features(crema, "fbank")
    changed = crema.utterances[3]
    write_wav(Path(changed.audio_path), 0.4, 16_000, seed=999)
    with pytest.raises(PerserbenchError, match=f"audio file .*{changed.id}.wav changed since features 'fbank'.*"
                                               "perserbench features extract --corpus crema-d"):
        load_cached_features(crema, "fbank")
    report = extract_features(crema, "fbank")
    assert (report.extracted, report.reused, report.forwards) == (1, 9, 1)
    feats = load_cached_features(crema, "fbank")
    np.testing.assert_allclose(feats[3], upstreams.FbankUpstream().embed([load_audio(changed.audio_path)])[0],
                               rtol=1e-5, atol=1e-5)


def test_killed_extraction_resumes_where_it_stopped(crema, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = upstreams.FbankUpstream._forward
    calls = {"n": 0}

    def dies_on_third_batch(self, waves):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C / a kill looks like mid-extraction
        return original(self, waves)

    monkeypatch.setattr(upstreams.FbankUpstream, "_forward", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_features(crema, "fbank", batch_seconds=0.6)  # 2 clips per batch → 5 batches
    entry = entry_dir(crema, "fbank")
    assert not entry.exists() and entry.with_name("fbank.partial").is_dir()
    with pytest.raises(PerserbenchError, match="extraction is in progress or was interrupted; run it again"):
        load_cached_features(crema, "fbank")
    assert [e.complete for e in list_entries(tmp_path / "cache")] == [False]
    monkeypatch.setattr(upstreams.FbankUpstream, "_forward", original)
    report = extract_features(crema, "fbank", batch_seconds=0.6)
    assert (report.resumed, report.extracted, report.forwards) == (4, 6, 3)
    assert not entry.with_name("fbank.partial").exists()
    resumed = load_cached_features(crema, "fbank")
    fresh = extract_features(crema, "fbank", key="fbank-again", force=True)
    assert fresh.extracted == 10
    np.testing.assert_array_equal(resumed, load_cached_features(crema, "fbank-again"))


def test_bad_audio_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    write_crema_d(tmp_path / "crema", actors=(1001,), clips_per_actor=4)
    cache = tmp_path / "cache"
    corpus = load_corpus("crema-d", root=str(tmp_path / "crema"), cache_dir=str(cache))
    victim = Path(corpus.utterances[2].audio_path)
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])  # truncated copy
    with pytest.raises(PerserbenchError, match=f"{victim.name} is truncated"):
        extract_features(corpus, "fbank")
    assert _cache_files(cache) == []
    victim.write_bytes(b"RIFF....WAVEjunk" * 40)  # corrupt header
    corpus = load_corpus("crema-d", root=str(tmp_path / "crema"), cache_dir=str(cache))
    with pytest.raises(PerserbenchError, match=f"{victim.name} is unreadable or corrupt"):
        extract_features(corpus, "fbank")
    assert _cache_files(cache) == []


def test_decode_failure_mid_extraction_removes_the_partial(crema, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from perserbench.features import cache as cache_mod

    real = cache_mod._load
    target = crema.utterances[7].audio_path

    def flaky(path: str, sr: int) -> np.ndarray:
        if path == target:
            raise PerserbenchError(f"audio file {path} could not be decoded (simulated)")
        return real(path, sr)

    monkeypatch.setattr(cache_mod, "_load", flaky)
    with pytest.raises(PerserbenchError, match="could not be decoded"):
        extract_features(crema, "fbank", batch_seconds=0.6)
    assert _cache_files(tmp_path / "cache") == []


def test_missing_features_error_names_the_command(crema) -> None:
    with pytest.raises(PerserbenchError, match=r"no cached features 'wavlm-base-plus' for corpus 'crema-d'.*"
                                               r"run: perserbench features extract --corpus crema-d --root .*crema"):
        load_cached_features(crema, "wavlm-base-plus")


def test_subset_corpus_reuses_the_entry_and_alternating_options_never_evict(crema, tmp_path: Path) -> None:
    extract_features(crema, "fbank")
    av = load_corpus("crema-d", root=str(tmp_path / "crema"), cache_dir=str(tmp_path / "cache"), query_types="1,3")
    assert len(av.utterances) == len(crema.utterances)  # same clips here, more raters
    assert extract_features(av, "fbank").up_to_date


def test_feature_row_manifest_has_nothing_to_extract(tmp_path: Path) -> None:
    path, _ = write_manifest(tmp_path, utterances=3, listeners=2, features=4)
    corpus = load_corpus("manifest", path=str(path))
    with pytest.raises(PerserbenchError, match="no audio paths .* nothing to extract"):
        extract_features(corpus, "fbank", cache_dir=tmp_path / "cache")


def test_cli_extract_and_list(tmp_path: Path, tiny_wavlm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    import perserbench.cli.features as cli_features

    monkeypatch.setattr(cli_features, "console", Console(width=250))
    write_iemocap(tmp_path / "iemo", sessions=(1,), turns=4)
    cache = tmp_path / "cache"
    args = ["features", "extract", "--corpus", "iemocap", "--root", str(tmp_path / "iemo"),
            "--upstream", str(tiny_wavlm), "--cache-dir", str(cache), "--batch-seconds", "1"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "features 'tiny-wavlm' of iemocap" in first.output and "extracted now" in first.output
    before = upstreams.forward_count()
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "up to date" in second.output
    assert upstreams.forward_count() == before
    listing = runner.invoke(app, ["features", "list", "--cache-dir", str(cache)])
    assert listing.exit_code == 0 and "tiny-wavlm" in listing.output and "complete" in listing.output
    corpus = load_corpus("iemocap", root=str(tmp_path / "iemo"), cache_dir=str(cache))
    assert load_cached_features(corpus, "tiny-wavlm").shape == (8, 3, 32)
