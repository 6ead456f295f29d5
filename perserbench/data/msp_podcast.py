"""MSP-Podcast loader (``msp-podcast --root MSP-PODCAST-Publish-1.x``).

Per-annotator labels come from the release's detailed label file, in either of its forms:

* ``Labels/labels_detailed.json`` (releases 1.x up to 1.11 ship it): an object keyed by audio
  file name, each value an object keyed by worker id whose value holds ``EmoClass_Major``
  (the primary emotion) and ``EmoClass_Second`` (comma-separated secondary emotions), e.g.
  ``{"MSP-PODCAST_0001_0008.wav": {"WORKER00001234.1": {"EmoClass_Major": "Neutral",
  "EmoClass_Second": "Concerned,Neutral", "EmoAct": 4.0, ...}}}``;
  the per-file value may also be ``{"Workers": [{"Name": "WORKER...", "EmoClass_Major": ...}]}``
  (the layout of the MSP corpora's later JSON files);
* ``Labels/labels_detailed.csv``, one row per (file, worker), in one of two layouts:
  - separate columns (1.6 style ``FileName,Workers,EmoClass_Major,EmoClass_Second,EmoAct,...``
    and 2.0 style with ``WorkerID``): ``FileName``, the worker id (the column is found among
    ``Workers``, ``Worker``, ``WorkerID``, ``Worker_ID``, ``Annotator``, ``AnnotatorID``,
    ``Rater``; override with ``worker_column=...``), ``EmoClass_Major`` and optionally
    ``EmoClass_Second``;
  - one packed ``EmoDetail`` column (1.11/1.12 style):
    ``"WORKER00012345; Angry; Frustrated,Annoyed; A:4.0; V:2.0; D:5.0;"`` — worker, primary,
    comma-separated secondaries (possibly empty), then the attributes, which are ignored.

Each worker is a listener; their label set is the primary emotion plus (``secondary=true``,
the default) their secondary emotions — MSP-Podcast's own multi-label answer. Primary
classes are Angry, Sad, Happy, Surprise, Fear, Disgust, Contempt, Neutral, Other (also as
the one-letter codes A S H U F D C N O); ``Other-<free text>`` counts as Other. Secondary
answers add Amused, Frustrated, Depressed, Concerned, Disappointed, Excited, Confused,
Annoyed. Anything else is an unknown label and an error naming the file and line (CSV) or
the file name and worker (JSON).

Sessions are the partitions (``Train``, ``Development``, ``Test1``, ``Test2``, ``Test3``) from
``Partitions.txt`` (lines ``Test1; MSP-PODCAST_0001_0008.wav``) or, when absent, from the
``Split_Set`` column of ``Labels/labels_consensus.csv`` (older releases: ``labels_concensus.csv``).
A file in no partition gets session ``Unpartitioned``. Speakers come from the consensus
file's ``SpkrID`` column or ``Speaker_ids.txt`` (lines ``MSP-PODCAST_0001_0008.wav; 0001``);
an unknown speaker becomes ``unknown-<podcast number>`` so that speaker-level splits still
keep one podcast's segments together. Audio: ``Audios/<file name>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from perserbench.data import register_corpus
from perserbench.data.corpus import Corpus, Utterance
from perserbench.data.loading import (
    CorpusBuilder,
    LabelVocabulary,
    check_policy,
    line_error,
    parse_bool,
    read_csv_rows,
    resolve_root,
)
from perserbench.errors import PerserbenchError
from perserbench.inputs import read_text

PRIMARY_CLASSES = ("Angry", "Sad", "Happy", "Surprise", "Fear", "Disgust", "Contempt", "Neutral", "Other")
SECONDARY_ONLY = ("Amused", "Frustrated", "Depressed", "Concerned", "Disappointed", "Excited", "Confused", "Annoyed")
MSP_CLASSES = PRIMARY_CLASSES + SECONDARY_ONLY
_CODES = {"A": "Angry", "S": "Sad", "H": "Happy", "U": "Surprise", "F": "Fear", "D": "Disgust",
          "C": "Contempt", "N": "Neutral", "O": "Other"}
_ALIASES = {"Anger": "Angry", "Sadness": "Sad", "Happiness": "Happy", "Surprised": "Surprise",
            "Disgusted": "Disgust", "Fearful": "Fear", "Frustration": "Frustrated", **_CODES}
PRIMARY = LabelVocabulary(PRIMARY_CLASSES, {a: t for a, t in _ALIASES.items() if t in PRIMARY_CLASSES},
                          prefixes={"Other": "Other"})
ANY = LabelVocabulary(MSP_CLASSES, _ALIASES, prefixes={"Other": "Other"})

WORKER_COLUMNS = ("Workers", "Worker", "WorkerID", "Worker_ID", "Annotator", "AnnotatorID", "Annotator_ID", "Rater")
_EMPTY = ("", "nan", "none", "null")


def _secondary_tokens(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip().lower() not in _EMPTY]
    return [t.strip() for t in str(value).split(",") if t.strip().lower() not in _EMPTY]


def _parse_detail(value: str, path: Path, lineno: int) -> tuple[str, str, list[str]]:
    """``"WORKER1; Angry; Frustrated,Annoyed; A:4.0; V:2.0; D:5.0;"`` → (worker, primary, secondaries)."""
    parts = [p.strip() for p in value.split(";")]
    if len(parts) < 3 or not parts[0] or not parts[1]:
        raise line_error(path, lineno, f"malformed EmoDetail {value!r}; expected "
                         "'WORKER; PRIMARY; SECONDARY,...; A:x; V:y; D:z;'")
    return parts[0], parts[1], _secondary_tokens(parts[2])


def _stem(file_name: str) -> str:
    return file_name[:-4] if file_name.lower().endswith(".wav") else file_name


def _partitions(base: Path, consensus: dict[str, dict[str, str]]) -> dict[str, str]:
    path = base / "Partitions.txt"
    if path.is_file():
        out: dict[str, str] = {}
        for lineno, raw in enumerate(read_text(path, "file", encoding="utf-8-sig").splitlines(), start=1):
            if not raw.strip():
                continue
            part, sep, name = raw.partition(";")
            if not sep or not part.strip() or not name.strip():
                raise line_error(path, lineno, f"expected 'PARTITION; FILE.wav', got {raw.strip()!r}")
            out[_stem(name.strip())] = part.strip()
        return out
    parts = {k: v["Split_Set"] for k, v in consensus.items() if v.get("Split_Set")}
    if not parts:
        raise PerserbenchError(
            f"corpus 'msp-podcast': no partitions found: neither {path} nor a Split_Set column in "
            f"{base / 'Labels' / 'labels_consensus.csv'}"
        )
    return parts


def _consensus(base: Path) -> dict[str, dict[str, str]]:
    for name in ("labels_consensus.csv", "labels_concensus.csv"):
        path = base / "Labels" / name
        if path.is_file():
            return {_stem(row["FileName"]): row for _, row in read_csv_rows(path, ["FileName"])}
    return {}


def _speakers(base: Path, consensus: dict[str, dict[str, str]]) -> dict[str, str]:
    out = {k: v["SpkrID"] for k, v in consensus.items() if v.get("SpkrID")}
    path = base / "Speaker_ids.txt"
    if not out and path.is_file():
        for raw in read_text(path, "file", encoding="utf-8-sig").splitlines():
            name, sep, spk = raw.partition(";")
            if sep and name.strip().lower().endswith(".wav") and spk.strip():
                out[_stem(name.strip())] = spk.strip()
    return out


def _detailed_rows(base: Path, labels_file: str | None,
                   worker_column: str | None) -> Iterator[tuple[object, int | None, str, str, str, list[str]]]:
    """Yield ``(where_path, where_line, file_stem, worker, primary, secondary_tokens)``."""
    candidates = [Path(labels_file)] if labels_file else [base / "Labels" / "labels_detailed.json",
                                                         base / "Labels" / "labels_detailed.csv"]
    candidates = [p if p.is_absolute() else base / p for p in candidates]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise PerserbenchError(
            "corpus 'msp-podcast': missing annotation file: expected "
            f"{' or '.join(str(p) for p in candidates)} (the release's per-annotator labels)"
        )
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(read_text(path, "file", encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise line_error(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise PerserbenchError(f"{path}: expected an object keyed by audio file name")
        for file_name, workers in data.items():
            if isinstance(workers, dict) and isinstance(workers.get("Workers"), list):
                workers = {str(w.get("Name", "")) if isinstance(w, dict) else "": w for w in workers["Workers"]}
            if not isinstance(workers, dict):
                raise PerserbenchError(f"{path}: entry {file_name!r} must map worker ids to their labels")
            for worker, entry in workers.items():
                if not worker:
                    raise PerserbenchError(f"{path}: entry {file_name!r} has a worker without a Name")
                if not isinstance(entry, dict) or "EmoClass_Major" not in entry:
                    raise PerserbenchError(f"{path}: entry {file_name!r} / worker {worker!r} has no EmoClass_Major")
                where = f"{path} [{file_name!r}][{worker!r}]"
                yield where, None, _stem(file_name), str(worker), str(entry["EmoClass_Major"]), \
                    _secondary_tokens(entry.get("EmoClass_Second"))
        return
    header = next(read_csv_rows(path, ["FileName"]), None)
    if header is None:
        return
    columns = set(header[1])
    if "EmoDetail" in columns and "EmoClass_Major" not in columns:
        for lineno, row in read_csv_rows(path, ["FileName", "EmoDetail"]):
            worker, major, second = _parse_detail(row["EmoDetail"], path, lineno)
            if not row["FileName"]:
                raise line_error(path, lineno, "empty FileName")
            yield path, lineno, _stem(row["FileName"]), worker, major, second
        return
    if "EmoClass_Major" not in columns:
        raise line_error(path, 1, "missing column 'EmoClass_Major' (or a packed 'EmoDetail' column)")
    column = worker_column or next((c for c in WORKER_COLUMNS if c in columns), None)
    if column is None or column not in columns:
        raise line_error(path, 1, f"no worker-id column (looked for {', '.join([worker_column] if worker_column else WORKER_COLUMNS)}); "
                         "pass worker_column=NAME")
    for lineno, row in read_csv_rows(path, ["FileName", "EmoClass_Major", column]):
        if not row["FileName"] or not row[column] or not row["EmoClass_Major"]:
            raise line_error(path, lineno, "empty FileName, worker or EmoClass_Major")
        yield path, lineno, _stem(row["FileName"]), row[column], row["EmoClass_Major"], \
            _secondary_tokens(row.get("EmoClass_Second"))


@register_corpus("msp-podcast")
def load_msp_podcast(root: str | Path | None = None, missing_audio: str = "fail", secondary: bool | str = True,
                     labels_file: str | None = None, worker_column: str | None = None,
                     cache_dir: str | None = None) -> Corpus:
    """Load MSP-Podcast's per-worker categorical labels (see the module docstring)."""
    base = resolve_root(root, "msp-podcast")
    check_policy(missing_audio)
    use_secondary = parse_bool(secondary, "secondary")
    consensus = _consensus(base)
    partitions = _partitions(base, consensus)
    speakers = _speakers(base, consensus)
    builder = CorpusBuilder("msp-podcast", MSP_CLASSES)
    unpartitioned = 0
    for where, line, stem, worker, major, second in _detailed_rows(base, labels_file, worker_column):
        if stem not in builder:
            session = partitions.get(stem)
            if session is None:
                session, unpartitioned = "Unpartitioned", unpartitioned + 1
            speaker = speakers.get(stem, "")
            if not speaker or speaker.lower() == "unknown":
                podcast = stem.split("_")[1] if stem.count("_") >= 2 else stem
                speaker = f"unknown-{podcast}"
            builder.add_utterance(Utterance(stem, speaker, session, str(base / "Audios" / f"{stem}.wav")))
        names = [PRIMARY.resolve(major, where, line, "MSP-Podcast primary emotion")]
        if use_secondary:
            names += [ANY.resolve(t, where, line, "MSP-Podcast secondary emotion") for t in second]
        builder.annotate(stem, worker, names)
    return builder.build(base, missing_audio, {"secondary": use_secondary, "unpartitioned": unpartitioned,
                                               "cache_dir": cache_dir})
