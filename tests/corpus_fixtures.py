"""Writers of small corpora in each release's exact on-disk format, with the truth they wrote.

Each ``write_*`` function builds a fixture tree under a folder and returns a
:class:`FixtureTruth`: the utterances (id → speaker, session, audio path) and the label set
every listener gave every utterance, in the corpus's own class names. Tests compare a
loader's output with that truth; hand-written snippets in the tests pin the exact parsing of
multi-label lines and comments.

Audio is short generated speech-like noise (a few tenths of a second), written with soundfile
at a rate other than 16 kHz where the real corpus uses one, so the resampling path runs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass
class FixtureTruth:
    utterances: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> (speaker, session, audio)
    labels: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (utterance, listener) -> classes

    @property
    def listeners(self) -> set[str]:
        return {listener for _, listener in self.labels}


def write_wav(path: Path, seconds: float, rate: int, seed: int, channels: int = 1) -> None:
    """A deterministic clip: an amplitude-modulated tone plus noise (not silence, so features vary)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 100 + 150 * rng.random()
    wave = 0.3 * np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.normal(size=t.size)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), rate, subtype="PCM_16")


# --------------------------------------------------------------------------------- IEMOCAP
IEMOCAP_EMOTIONS = ("Neutral state", "Frustration", "Anger", "Sadness", "Happiness", "Excited", "Surprise")
IEMOCAP_EVALUATORS = ("E1", "E2", "E3", "E4", "E5")


def write_iemocap(root: Path, sessions: tuple[int, ...] = (1, 2, 3), dialogs: tuple[str, ...] = ("impro01", "script01_1"),
                  turns: int = 6, seed: int = 0, audio_seconds: float = 0.25) -> FixtureTruth:
    """``Session<n>/dialog/EmoEvaluation/<dialog>.txt`` + ``Session<n>/sentences/wav/<dialog>/<turn>.wav``.

    Every turn gets 3 evaluators out of E1..E5 (1-2 emotions each, some with a comment), a
    self-evaluation by an actor (``C-F1``/``C-M1``, left out by the loader by default) and
    attribute (``A-``) lines, as in the release.
    """
    rng = np.random.default_rng(seed)
    truth = FixtureTruth()
    for s in sessions:
        ses = f"Ses{s:02d}"
        eval_dir = root / f"Session{s}" / "dialog" / "EmoEvaluation"
        eval_dir.mkdir(parents=True, exist_ok=True)
        for d_i, dialog in enumerate(dialogs):
            name = f"{ses}{'FM'[d_i % 2]}_{dialog}"
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            t = 1.0
            for k in range(turns):
                spk = "FM"[k % 2]
                turn = f"{name}_{spk}{k // 2:03d}"
                audio = root / f"Session{s}" / "sentences" / "wav" / name / f"{turn}.wav"
                write_wav(audio, audio_seconds + 0.05 * (k % 3), 16_000, seed=s * 1000 + d_i * 100 + k)
                truth.utterances[turn] = (f"{ses}_{spk}", ses, str(audio))
                lines.append(f"[{t:.4f} - {t + 2.5:.4f}]\t{turn}\tneu\t[2.5000, 3.0000, 2.5000]")
                t += 3.0
                for ev in sorted(rng.choice(IEMOCAP_EVALUATORS, size=3, replace=False)):
                    chosen = sorted(rng.choice(IEMOCAP_EMOTIONS, size=int(rng.integers(1, 3)), replace=False),
                                    key=IEMOCAP_EMOTIONS.index)
                    comment = "(loud; a bit (too) much)" if rng.random() < 0.3 else "()"
                    lines.append(f"C-{ev}:\t{'; '.join(chosen)};\t{comment}")
                    truth.labels[(turn, str(ev))] = set(chosen)
                lines.append(f"C-{spk}1:\tNeutral state;\t(self)")
                lines.append("A-E1:\tval 3; act 2; dom  2;\t()")
                lines.append("")
            (eval_dir / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return truth


# ----------------------------------------------------------------------------- MSP-Podcast
MSP_PRIMARY = ("Angry", "Sad", "Happy", "Neutral", "Surprise", "Contempt", "Fear", "Disgust")
MSP_SECONDARY = ("Frustrated", "Concerned", "Amused", "Annoyed")
MSP_WORKERS = tuple(f"WORKER{n:08d}" for n in (11, 12, 13, 14, 15, 16))
MSP_PARTITIONS = ("Train", "Development", "Test1")


def write_msp_podcast(root: Path, podcasts: int = 6, segments: int = 6, layout: str = "columns", seed: int = 0,
                      audio_seconds: float = 0.25) -> FixtureTruth:
    """``Labels/labels_detailed.{csv,json}``, ``Labels/labels_consensus.csv``, ``Partitions.txt``,
    ``Audios/MSP-PODCAST_<podcast>_<segment>.wav``.

    ``layout``: ``columns`` (2.0 style: FileName, WorkerID, EmoClass_Major, EmoClass_Second,
    EmoAct, EmoVal, EmoDom), ``emodetail`` (1.11 style packed EmoDetail column) or ``json``.
    Podcast ``p`` goes to partition ``MSP_PARTITIONS[p % 3]``; speaker ``p * 10``.
    """
    rng = np.random.default_rng(seed)
    truth = FixtureTruth()
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    detailed: list[tuple[str, str, str, list[str]]] = []
    consensus = [["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]]
    partitions = []
    for p in range(1, podcasts + 1):
        for g in range(1, segments + 1):
            stem = f"MSP-PODCAST_{p:04d}_{g:04d}"
            part = MSP_PARTITIONS[p % len(MSP_PARTITIONS)]
            audio = root / "Audios" / f"{stem}.wav"
            write_wav(audio, audio_seconds, 16_000, seed=p * 1000 + g)
            truth.utterances[stem] = (str(p * 10), part, str(audio))
            consensus.append([f"{stem}.wav", "N", "4.0", "4.0", "4.0", str(p * 10), "Female", part])
            partitions.append(f"{part}; {stem}.wav")
            for worker in sorted(rng.choice(MSP_WORKERS, size=4, replace=False)):
                major = str(rng.choice(MSP_PRIMARY))
                second = [str(x) for x in rng.choice(MSP_SECONDARY, size=int(rng.integers(0, 3)), replace=False)]
                detailed.append((f"{stem}.wav", str(worker), major, second))
                truth.labels[(stem, str(worker))] = {major, *second}
    with open(root / "Labels" / "labels_consensus.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(consensus)
    (root / "Partitions.txt").write_text("\n".join(partitions) + "\n")
    if layout == "columns":
        with open(root / "Labels" / "labels_detailed.csv", "w", newline="") as handle:
            w = csv.writer(handle)
            w.writerow(["FileName", "WorkerID", "EmoClass_Major", "EmoClass_Second", "EmoAct", "EmoVal", "EmoDom"])
            for f, worker, major, second in detailed:
                w.writerow([f, worker, major, ",".join(second), "4", "3", "5"])
    elif layout == "emodetail":
        with open(root / "Labels" / "labels_detailed.csv", "w", newline="") as handle:
            w = csv.writer(handle)
            w.writerow(["FileName", "EmoDetail"])
            for f, worker, major, second in detailed:
                w.writerow([f, f"{worker}; {major}; {','.join(second)}; A:4.0; V:3.0; D:5.0;"])
    elif layout == "json":
        data: dict[str, dict[str, dict[str, str]]] = {}
        for f, worker, major, second in detailed:
            data.setdefault(f, {})[worker] = {"EmoClass_Major": major, "EmoClass_Second": ",".join(second),
                                              "EmoAct": "4", "EmoVal": "3", "EmoDom": "5"}
        (root / "Labels" / "labels_detailed.json").write_text(json.dumps(data, indent=1))
    else:
        raise ValueError(layout)
    return truth


# --------------------------------------------------------------------------------- CREMA-D
CREMA_HEADER = ["", "localid", "pos", "ans", "ttr", "queryType", "numTries", "clipNum", "questNum", "subType",
                "clipName", "sessionNums", "respEmo", "respLevel", "dispEmo", "dispVal", "dispLevel"]
CREMA_CODES = {"A": "anger", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}
CREMA_SENTENCES = ("DFA", "IEO", "ITS", "TAI")
CREMA_EMOS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def write_crema_d(root: Path, actors: tuple[int, ...] = (1001, 1002, 1003, 1004), clips_per_actor: int = 8,
                  raters: int = 6, seed: int = 0, audio_seconds: float = 0.25) -> FixtureTruth:
    """``finishedResponses.csv`` (the release's header) and ``AudioWAV/<clip>.wav`` (16 kHz).

    Each clip is rated by 4 of ``raters`` raters with queryType 1 (voice only); extra rows with
    queryType 2 (face) and 3 (audio-visual) and a practice row must be ignored by the loader.
    """
    rng = np.random.default_rng(seed)
    truth = FixtureTruth()
    rows = []
    n = 0
    for actor in actors:
        for c in range(clips_per_actor):
            clip = f"{actor}_{CREMA_SENTENCES[c % 4]}_{CREMA_EMOS[c % 6]}_{('XX', 'HI', 'LO', 'MD')[c // 4 % 4]}"
            audio = root / "AudioWAV" / f"{clip}.wav"
            write_wav(audio, audio_seconds, 16_000, seed=actor * 100 + c)
            truth.utterances[clip] = (str(actor), str(actor), str(audio))
            for r in sorted(rng.choice(raters, size=4, replace=False)):
                code = str(rng.choice(list(CREMA_CODES)))
                n += 1
                rows.append([n, f"{r + 1}", 1, f"{code}_60", 2100, 1, 0, c, n, 4, clip, f"s{r}", code, 60, "A", 50, "X"])
                truth.labels[(clip, f"{r + 1}")] = {CREMA_CODES[code]}
            for query_type in (2, 3):  # face-only and audio-visual answers: not speech ratings
                n += 1
                rows.append([n, "99", 1, "H_50", 1500, query_type, 0, c, n, 4, clip, "s99", "H", 50, "A", 50, "X"])
    n += 1
    rows.append([n, "1", 1, "N_50", 1500, 1, 0, 0, n, 4, "1001_DFA_ANG_XX_practice", "s0", "N", 50, "A", 50, "X"])
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "finishedResponses.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(CREMA_HEADER)
        w.writerows(rows)
    return truth


# -------------------------------------------------------------------------------- manifest
def write_manifest(root: Path, kind: str = "csv", utterances: int = 12, listeners: int = 4, seed: int = 0,
                   features: int | None = None) -> tuple[Path, FixtureTruth]:
    """A manifest (``csv`` or ``jsonl``) with audio paths relative to it, or feature rows
    ``f0..f{features-1}`` when ``features`` is given."""
    rng = np.random.default_rng(seed)
    truth = FixtureTruth()
    vocab = ("angry", "calm", "happy", "sad")
    rows = []
    for u in range(utterances):
        uid = f"utt{u:03d}"
        speaker, session = f"spk{u % 3}", f"sess{u % 2}"
        audio_rel = f"wav/{uid}.wav"
        if features is None:
            write_wav(root / audio_rel, 0.2, 22_050, seed=u, channels=2)
        vec = [round(float(x), 4) for x in np.random.default_rng(u).normal(size=features or 0)]
        truth.utterances[uid] = (speaker, session, str((root / audio_rel).resolve()) if features is None else "")
        for j in range(listeners):
            chosen = sorted({str(x) for x in rng.choice(vocab, size=int(rng.integers(1, 3)), replace=False)})
            truth.labels[(uid, f"L{j}")] = set(chosen)
            row = {"utterance_id": uid, "listener_id": f"L{j}", "labels": ";".join(chosen),
                   "speaker": speaker, "session": session}
            if features is None:
                row["audio_path"] = audio_rel
            else:
                row.update({f"f{i}": v for i, v in enumerate(vec)})
            rows.append(row)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"manifest.{kind}"
    if kind == "csv":
        with open(path, "w", newline="") as handle:
            w = csv.DictWriter(handle, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps({**r, "labels": r["labels"].split(";")}) + "\n" for r in rows))
    return path, truth


# ------------------------------------------------------------------------------- upstreams
def write_tiny_wavlm(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    """A randomly initialised WavLM with tiny sizes, saved like a hub checkpoint (config,
    feature-extractor config, weights): the same code path as a real WavLM, without weights."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    torch.manual_seed(seed)
    config = WavLMConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 4),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=32,
                         max_bucket_distance=100, feat_extract_norm="layer", do_stable_layer_norm=True)
    WavLMModel(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------- cached features
CACHED_TASK = """
name = "manifest-cached"
version = "0.1"
[corpus]
name = "manifest"
features = "tiny-wavlm"
labels = ["angry", "calm", "happy", "sad"]
options = {{ path = "{path}", cache_dir = "{cache}" }}
[listeners]
folds = 2
seed = 1
[utterances]
split = "session"
heldout = ["sess1"]
[episodes]
shots = [1, 2]
query = 3
min_query = 2
episodes = 1
seed = 4
"""


def write_cached_task(folder: Path, model: Path, utterances: int = 16, listeners: int = 6) -> Path:
    """A task file on a manifest corpus with audio whose tiny-WavLM features (3 layers × 32) are
    in the feature cache ``folder/cache``. The manifest is rewritten in reverse order after the
    extraction, so the corpus's row ``r`` is cache row ``utterances - 1 - r``: a test that reads
    the wrong row through the corpus-row → cache-row map sees other values."""
    from perserbench.data import load_corpus
    from perserbench.features.cache import extract_features

    path, _ = write_manifest(folder / "corpus", utterances=utterances, listeners=listeners)
    corpus = load_corpus("manifest", path=str(path), cache_dir=str(folder / "cache"))
    extract_features(corpus, str(model), key="tiny-wavlm")
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *rows[::-1]]) + "\n")
    task = folder / "manifest-cached.toml"
    task.write_text(CACHED_TASK.format(path=path, cache=folder / "cache"))
    return task
