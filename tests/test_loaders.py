"""Real-corpus loaders on fixture trees written in each release's exact format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from corpus_fixtures import (
    FixtureTruth,
    write_crema_d,
    write_iemocap,
    write_manifest,
    write_msp_podcast,
    write_wav,
)

from perserbench.data import Corpus, load_corpus
from perserbench.data.loading import MissingAudioWarning
from perserbench.errors import PerserbenchError


def labels_of(corpus: Corpus) -> dict[tuple[str, str], set[str]]:
    ann = corpus.annotations
    ids = corpus.utterance_ids
    return {(ids[u], str(listener)): {corpus.vocabulary[c] for c in np.flatnonzero(y)}
            for u, listener, y in zip(ann.utterance, ann.listener, ann.labels)}


def assert_matches(corpus: Corpus, truth: FixtureTruth, check_audio: bool = True) -> None:
    got = {u.id: (u.speaker, u.session, u.audio_path) for u in corpus.utterances}
    assert set(got) == set(truth.utterances)
    for uid, (speaker, session, audio) in truth.utterances.items():
        assert got[uid][:2] == (speaker, session), uid
        if check_audio:
            assert Path(got[uid][2]).resolve() == Path(audio).resolve()
    assert labels_of(corpus) == truth.labels
    assert set(corpus.listeners) == truth.listeners


# ---------------------------------------------------------------------------------- IEMOCAP
IEMOCAP_DIALOG = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral state;\t()
C-E3:\tNeutral state; Frustration;\t(tired; a bit (very) annoyed)
C-E4:\tOther:sarcastic;\t()
C-F1:\tNeutral state;\t(curious)
A-E3:\tval 3; act 2; dom  2;\t()
A-F1:\tval 3; act 2; dom  1;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M000\tfru\t[2.0000, 3.5000, 3.5000]
C-E1:\tAnger; Frustration; Excited;\t(loud)
C-E2:\tFrustration;\t()
C-M1:\tAnger;\t()
"""


def _iemocap_single(root: Path, text: str = IEMOCAP_DIALOG) -> Path:
    ev = root / "Session1" / "dialog" / "EmoEvaluation"
    ev.mkdir(parents=True)
    (ev / "Ses01F_impro01.txt").write_text(text)
    for turn in ("Ses01F_impro01_F000", "Ses01F_impro01_M000"):
        write_wav(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / f"{turn}.wav", 0.2, 16_000, 1)
    return root


def test_iemocap_parses_multilabel_lines_comments_and_actors(tmp_path: Path) -> None:
    corpus = load_corpus("iemocap", root=str(_iemocap_single(tmp_path)))
    assert [u.id for u in corpus.utterances] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]
    f0, m0 = corpus.utterances
    assert (f0.speaker, f0.session, m0.speaker) == ("Ses01_F", "Ses01", "Ses01_M")
    assert f0.duration == pytest.approx(8.2357 - 6.2901)
    assert f0.audio_path.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    assert labels_of(corpus) == {
        ("Ses01F_impro01_F000", "E2"): {"Neutral state"},
        ("Ses01F_impro01_F000", "E3"): {"Neutral state", "Frustration"},  # comment with ; and ( )
        ("Ses01F_impro01_F000", "E4"): {"Other"},
        ("Ses01F_impro01_M000", "E1"): {"Anger", "Frustration", "Excited"},
        ("Ses01F_impro01_M000", "E2"): {"Frustration"},
    }
    with_actors = load_corpus("iemocap", root=str(tmp_path), actor_evaluations="true")
    got = labels_of(with_actors)
    assert got[("Ses01F_impro01_F000", "Ses01_F1")] == {"Neutral state"}
    assert got[("Ses01F_impro01_M000", "Ses01_M1")] == {"Anger"}
    scoped = load_corpus("iemocap", root=str(tmp_path), evaluator_scope="session")
    assert set(scoped.listeners) == {"Ses01_E1", "Ses01_E2", "Ses01_E3", "Ses01_E4"}


def test_iemocap_generated_tree_loads_exactly(tmp_path: Path) -> None:
    truth = write_iemocap(tmp_path, sessions=(1, 2), turns=5)
    corpus = load_corpus("iemocap", root=str(tmp_path))
    assert len(corpus.utterances) == 2 * 2 * 5
    assert len(corpus.annotations) == 3 * 20
    assert {u.session for u in corpus.utterances} == {"Ses01", "Ses02"}
    assert_matches(corpus, truth)
    assert corpus.metadata["annotation_files"] == 4


def test_iemocap_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = IEMOCAP_DIALOG.replace("C-E2:\tFrustration;", "C-E2:\tGrumpy;")
    _iemocap_single(tmp_path, bad)
    with pytest.raises(PerserbenchError, match=r"Ses01F_impro01\.txt:13: unknown IEMOCAP emotion 'Grumpy'"):
        load_corpus("iemocap", root=str(tmp_path))
    (tmp_path / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(
        IEMOCAP_DIALOG.replace("[10.0100 - 11.3925]", "[10.0100 11.3925]"))
    with pytest.raises(PerserbenchError, match=r"Ses01F_impro01\.txt:11: malformed turn header"):
        load_corpus("iemocap", root=str(tmp_path))


def test_iemocap_missing_annotation_files_and_root(tmp_path: Path) -> None:
    (tmp_path / "Session1" / "sentences").mkdir(parents=True)
    with pytest.raises(PerserbenchError, match=r"missing annotation files: no .*Session1/dialog/EmoEvaluation"):
        load_corpus("iemocap", root=str(tmp_path))
    with pytest.raises(PerserbenchError, match="no Session1..Session5 folders"):
        load_corpus("iemocap", root=str(tmp_path / "Session1"))
    with pytest.raises(PerserbenchError, match="pass --root DIR or set PERSERBENCH_IEMOCAP_ROOT"):
        load_corpus("iemocap")


def test_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _iemocap_single(tmp_path)
    monkeypatch.setenv("PERSERBENCH_IEMOCAP_ROOT", str(tmp_path))
    assert len(load_corpus("iemocap").utterances) == 2


def test_missing_audio_fail_or_skip(tmp_path: Path) -> None:
    truth = write_iemocap(tmp_path, sessions=(1,), turns=6)
    gone = sorted(truth.utterances)[:4]
    for uid in gone:
        Path(truth.utterances[uid][2]).unlink()
    with pytest.raises(PerserbenchError, match=r"4 of 12 audio files are missing \(first: .*\.wav, .*\.wav, .*\.wav, \.\.\.\)"):
        load_corpus("iemocap", root=str(tmp_path))
    with pytest.warns(MissingAudioWarning, match="skipping 4 of 12 audio files"):
        corpus = load_corpus("iemocap", root=str(tmp_path), missing_audio="skip")
    assert len(corpus.utterances) == 8 and not set(gone) & {u.id for u in corpus.utterances}
    assert corpus.annotations.utterance.max() == 7  # indices re-based after dropping
    with pytest.raises(PerserbenchError, match="missing_audio must be one of fail, skip"):
        load_corpus("iemocap", root=str(tmp_path), missing_audio="ignore")


# ------------------------------------------------------------------------------ MSP-Podcast
@pytest.mark.parametrize("layout", ["columns", "emodetail", "json"])
def test_msp_podcast_all_detailed_label_layouts(tmp_path: Path, layout: str) -> None:
    truth = write_msp_podcast(tmp_path, podcasts=3, segments=4, layout=layout)
    corpus = load_corpus("msp-podcast", root=str(tmp_path))
    assert len(corpus.utterances) == 12 and len(corpus.annotations) == 48
    assert_matches(corpus, truth)
    assert {u.session for u in corpus.utterances} == {"Train", "Development", "Test1"}


def test_msp_podcast_primary_only_and_errors(tmp_path: Path) -> None:
    truth = write_msp_podcast(tmp_path, podcasts=2, segments=3)
    primary = load_corpus("msp-podcast", root=str(tmp_path), secondary="false")
    got = labels_of(primary)
    assert all(len(v) == 1 for v in got.values()) and set(got) == set(truth.labels)
    assert all(got[k] <= truth.labels[k] for k in got)
    path = tmp_path / "Labels" / "labels_detailed.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[2], "Grumpy", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PerserbenchError, match=r"labels_detailed\.csv:4: unknown MSP-Podcast primary emotion 'Grumpy'"):
        load_corpus("msp-podcast", root=str(tmp_path))
    path.unlink()
    with pytest.raises(PerserbenchError, match="missing annotation file: expected .*labels_detailed.json or .*labels_detailed.csv"):
        load_corpus("msp-podcast", root=str(tmp_path))


def test_msp_podcast_emodetail_code_aliases_and_malformed(tmp_path: Path) -> None:
    write_msp_podcast(tmp_path, podcasts=1, segments=1, layout="emodetail")
    path = tmp_path / "Labels" / "labels_detailed.csv"
    path.write_text("FileName,EmoDetail\n"
                    "MSP-PODCAST_0001_0001.wav,\"WORKER1; Other-Bored; Annoyed,Other-tired; A:2.0; V:3.0; D:4.0;\"\n"
                    "MSP-PODCAST_0001_0001.wav,\"WORKER2; A; ; A:2.0; V:3.0; D:4.0;\"\n")
    got = labels_of(load_corpus("msp-podcast", root=str(tmp_path)))
    assert got == {("MSP-PODCAST_0001_0001", "WORKER1"): {"Other", "Annoyed"},
                   ("MSP-PODCAST_0001_0001", "WORKER2"): {"Angry"}}
    path.write_text("FileName,EmoDetail\nMSP-PODCAST_0001_0001.wav,WORKER1\n")
    with pytest.raises(PerserbenchError, match=r"labels_detailed\.csv:2: malformed EmoDetail"):
        load_corpus("msp-podcast", root=str(tmp_path))


# ---------------------------------------------------------------------------------- CREMA-D
def test_crema_d_keeps_voice_only_answers(tmp_path: Path) -> None:
    truth = write_crema_d(tmp_path, actors=(1001, 1002, 1003), clips_per_actor=6)
    corpus = load_corpus("crema-d", root=str(tmp_path))
    assert len(corpus.utterances) == 18 and len(corpus.annotations) == 18 * 4
    assert "99" not in corpus.listeners  # face-only / audio-visual rater rows dropped
    assert_matches(corpus, truth)
    assert corpus.annotations.labels.sum(axis=1).max() == 1  # CREMA-D answers are single-label
    av = load_corpus("crema-d", root=str(tmp_path), query_types="1,3")
    assert "99" in av.listeners and len(av.annotations) == 18 * 5


def test_crema_d_unknown_code_and_missing_file(tmp_path: Path) -> None:
    write_crema_d(tmp_path, actors=(1001,), clips_per_actor=3)
    path = tmp_path / "finishedResponses.csv"
    lines = path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[12] = "X"
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PerserbenchError, match=r"finishedResponses\.csv:3: unknown respEmo code 'X'; known codes: A, D, F, H, N, S"):
        load_corpus("crema-d", root=str(tmp_path))
    path.unlink()
    with pytest.raises(PerserbenchError, match=r"required file .*finishedResponses\.csv not found.*missing annotation file"):
        load_corpus("crema-d", root=str(tmp_path))


def test_crema_d_drop_slow(tmp_path: Path) -> None:
    write_crema_d(tmp_path, actors=(1001,), clips_per_actor=3)
    path = tmp_path / "finishedResponses.csv"
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[4] = "15000"
    lines[1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    full = load_corpus("crema-d", root=str(tmp_path))
    fast = load_corpus("crema-d", root=str(tmp_path), drop_slow=True)
    assert len(fast.annotations) == len(full.annotations) - 1 and fast.metadata["dropped_slow"] == 1


# --------------------------------------------------------------------------------- manifest
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_audio_rows(tmp_path: Path, kind: str) -> None:
    path, truth = write_manifest(tmp_path, kind=kind, utterances=10, listeners=3)
    corpus = load_corpus("manifest", path=str(path))
    assert len(corpus.utterances) == 10 and len(corpus.annotations) == 30
    assert corpus.vocabulary == ("angry", "calm", "happy", "sad")
    assert_matches(corpus, truth)
    assert len(load_corpus("manifest", root=str(path)).utterances) == 10  # --root works too


def test_manifest_feature_rows(tmp_path: Path) -> None:
    path, truth = write_manifest(tmp_path, utterances=6, listeners=2, features=5)
    corpus = load_corpus("manifest", path=str(path))
    assert corpus.features["manifest"].shape == (6, 1, 5)
    assert_matches(corpus, truth, check_audio=False)
    expected = np.round(np.random.default_rng(3).normal(size=5), 4)
    np.testing.assert_allclose(corpus.features["manifest"][3, 0], expected, rtol=1e-6)


def test_manifest_errors(tmp_path: Path) -> None:
    path, _ = write_manifest(tmp_path, utterances=3, listeners=2)
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0].replace("listener_id", "rater")] + text[1:]) + "\n")
    with pytest.raises(PerserbenchError, match=r"manifest\.csv:1: missing column 'listener_id'"):
        load_corpus("manifest", path=str(path))
    jl = tmp_path / "m.jsonl"
    jl.write_text(json.dumps({"utterance_id": "u1", "listener_id": "a", "labels": ["x"], "audio_path": "wav/utt000.wav"})
                  + "\n" + json.dumps({"utterance_id": "u2", "labels": ["x"], "audio_path": "wav/utt001.wav"}) + "\n")
    with pytest.raises(PerserbenchError, match=r"m\.jsonl:2: missing column 'listener_id'"):
        load_corpus("manifest", path=str(jl))
    with pytest.raises(PerserbenchError, match="unknown label 'x'; the vocabulary is a, b"):
        jl.write_text(json.dumps({"utterance_id": "u1", "listener_id": "a", "labels": ["x"], "audio_path": "w.wav"}) + "\n")
        load_corpus("manifest", path=str(jl), vocabulary="a;b")


def test_loader_output_does_not_depend_on_warnings(tmp_path: Path) -> None:
    """No warning is raised on a complete tree (the skip policy only warns when it drops)."""
    write_crema_d(tmp_path, actors=(1001,), clips_per_actor=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_corpus("crema-d", root=str(tmp_path))
