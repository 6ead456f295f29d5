"""Generic manifest loader (``manifest --path FILE``): any corpus without writing code.

A manifest is a CSV (``.csv``; ``.tsv`` for tab-separated) or JSON-lines (``.jsonl``) file
with one row per (utterance, listener) answer:

=================  ==========================================================================
``utterance_id``   required
``listener_id``    required
``labels``         required: the listener's classes, ``;``-separated (``"angry;frustrated"``);
                   in JSONL also a list
``audio_path``     the audio file, relative to the manifest's folder (or absolute), **or**
``f0`` ... ``fN``  a feature row (then the corpus carries ``features["manifest"]`` of shape
                   ``[N, 1, D]`` and a task uses ``features = "manifest"``; no extraction)
``speaker``        optional (default ``unknown``)
``session``        optional (default ``unknown``)
=================  ==========================================================================

Utterance fields (audio, features, speaker, session) repeat on every row of the utterance and
must agree. The vocabulary is the sorted set of label names unless ``vocabulary=a;b;c``
fixes it (then other names are errors). A missing column, an empty required value, a feature
value that is not a finite number, and two rows of one (utterance, listener) with different
labels are errors naming the file and line.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from perserbench.data import register_corpus
from perserbench.data.corpus import Corpus, Utterance
from perserbench.data.loading import (
    CorpusBuilder,
    check_policy,
    line_error,
    read_csv_rows,
    root_env_var,
)
from perserbench.errors import PerserbenchError
from perserbench.inputs import read_text

REQUIRED = ("utterance_id", "listener_id", "labels")
_FEATURE = re.compile(r"^f(\d+)$")


def _rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from read_csv_rows(path, REQUIRED, delimiter="\t" if suffix == ".tsv" else ",")
        return
    if suffix not in (".jsonl", ".ndjson"):
        raise PerserbenchError(f"{path}: a manifest must be .csv, .tsv or .jsonl")
    with io.StringIO(read_text(path, "manifest", encoding="utf-8-sig")) as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise line_error(path, lineno, f"not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise line_error(path, lineno, "each line must be a JSON object")
            absent = [c for c in REQUIRED if c not in row]
            if absent:
                raise line_error(path, lineno, f"missing column {absent[0]!r}")
            yield lineno, row


def _feature_columns(row: dict[str, object], path: Path, lineno: int) -> list[str]:
    numbered = sorted((int(m[1]), k) for k in row if (m := _FEATURE.match(k)))
    if numbered and [i for i, _ in numbered] != list(range(len(numbered))):
        gap = next(i for i, (j, _) in enumerate(numbered) if i != j)
        raise line_error(path, lineno, f"feature columns must be f0..fN without gaps; f{gap} is missing")
    return [k for _, k in numbered]


@register_corpus("manifest")
def load_manifest(path: str | Path | None = None, root: str | Path | None = None, missing_audio: str = "fail",
                  vocabulary: str | list | None = None, name: str = "manifest",
                  cache_dir: str | None = None) -> Corpus:
    """Load a manifest file (see the module docstring). ``root`` is accepted as an alias of
    ``path`` because the CLI passes ``--root`` to every corpus."""
    source = path if path is not None else root
    if source is None or str(source) == "":
        source = os.environ.get(root_env_var("manifest"), "")
    if str(source) == "":
        raise PerserbenchError("corpus 'manifest' needs the manifest file: pass --root FILE (or path=FILE), "
                               f"or set {root_env_var('manifest')}")
    file = Path(source).expanduser().resolve()
    if not file.is_file():
        raise PerserbenchError(f"corpus 'manifest': manifest file {file} not found")
    check_policy(missing_audio)
    rows = list(_rows(file))
    if not rows:
        raise PerserbenchError(f"{file}: the manifest has no rows")

    fixed = None
    if vocabulary is not None:
        fixed = [v.strip() for v in (vocabulary if isinstance(vocabulary, list) else str(vocabulary).split(";")) if v.strip()]
    parsed: list[tuple[int, str, str, list[str]]] = []
    seen_labels: set[str] = set()
    for lineno, row in rows:
        for column in ("utterance_id", "listener_id", "labels"):
            if row.get(column) in (None, "", []):
                raise line_error(file, lineno, f"empty value in column {column!r}")
        raw = row["labels"]
        labels = [str(x).strip() for x in raw] if isinstance(raw, list) else str(raw).split(";")
        labels = [x.strip() for x in labels if x.strip()]
        if not labels:
            raise line_error(file, lineno, "no label in column 'labels'")
        if fixed is not None:
            unknown = [x for x in labels if x not in fixed]
            if unknown:
                raise line_error(file, lineno, f"unknown label {unknown[0]!r}; the vocabulary is {', '.join(fixed)}")
        seen_labels.update(labels)
        parsed.append((lineno, str(row["utterance_id"]).strip(), str(row["listener_id"]).strip(), labels))

    first_line, first = rows[0]
    feature_cols = _feature_columns(first, file, first_line)
    has_audio = "audio_path" in first
    if not feature_cols and not has_audio:
        raise line_error(file, first_line, "missing column 'audio_path' (or feature columns f0..fN)")
    builder = CorpusBuilder(name, tuple(fixed if fixed is not None else sorted(seen_labels)))
    feature_rows: dict[str, np.ndarray] = {}
    answers: dict[tuple[str, str], tuple[int, set[str]]] = {}  # a repeated identical row is harmless
    for (lineno, row), (_, utt, listener, labels) in zip(rows, parsed):
        audio = None
        if has_audio:
            value = row.get("audio_path")
            if value in (None, ""):
                raise line_error(file, lineno, "missing value in column 'audio_path'")
            audio_file = Path(str(value))
            audio = str(audio_file if audio_file.is_absolute() else (file.parent / audio_file).resolve())
        if feature_cols:
            if _feature_columns(row, file, lineno) != feature_cols:
                raise line_error(file, lineno, f"expected feature columns f0..f{len(feature_cols) - 1} like line {first_line}")
            try:
                vector = np.array([float(row[c]) for c in feature_cols], dtype=np.float32)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise line_error(file, lineno, "feature columns f0..fN must be numbers") from None
            if not np.isfinite(vector).all():
                column = feature_cols[int(np.flatnonzero(~np.isfinite(vector))[0])]
                raise line_error(file, lineno, f"feature column {column} of utterance {utt!r} is "
                                 f"{row[column]!r}, not a finite number; fix or drop the row")
            if utt in feature_rows and not np.array_equal(feature_rows[utt], vector):
                raise line_error(file, lineno, f"utterance {utt!r} has a different feature row than before")
            feature_rows[utt] = vector
        speaker = str(row.get("speaker") or "unknown").strip()
        session = str(row.get("session") or "unknown").strip()
        builder.add_utterance(Utterance(utt, speaker, session, audio), (file, lineno))
        earlier = answers.setdefault((utt, listener), (lineno, set(labels)))
        if earlier[1] != set(labels):
            raise line_error(file, lineno, f"listener {listener!r} labels utterance {utt!r} "
                             f"{';'.join(sorted(labels))!r} here but {';'.join(sorted(earlier[1]))!r} on line "
                             f"{earlier[0]}; keep one row per (utterance, listener)")
        builder.annotate(utt, listener, labels)
    features = None
    if feature_cols:
        ids = builder.utterance_ids
        features = {"manifest": np.stack([feature_rows[i] for i in ids])[:, None, :]}
    return builder.build(file, missing_audio, {"manifest": str(file), "cache_dir": cache_dir}, features)
