"""Helpers shared by the real-corpus loaders (IEMOCAP, MSP-Podcast, CREMA-D, manifest).

Every loader reads files written by someone else, so every loader needs the same three
things, and they live here so that the four behave identically:

* **errors that point at the input** — :func:`line_error` names ``file:line`` and what to do;
  :func:`require_file` names the missing file and where it was expected;
* **label vocabularies with aliases** — :class:`LabelVocabulary` maps the spellings a release
  uses onto the corpus's canonical class names, and rejects unknown codes with the line;
* **one missing-audio policy** — :class:`CorpusBuilder.build` either fails with a count and
  the first few missing paths, or (``missing_audio="skip"``) drops those utterances with a
  :class:`MissingAudioWarning` carrying the same count and paths.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perserbench.data.corpus import Annotations, Corpus, Utterance
from perserbench.errors import PerserbenchError
from perserbench.inputs import read_text

MISSING_AUDIO_POLICIES = ("fail", "skip")
_SHOW_PATHS = 3  # how many missing paths an error or warning names


class MissingAudioWarning(UserWarning):
    """Utterances were dropped because their audio file is missing (``missing_audio="skip"``)."""


def line_error(path: str | Path, line: int | None, message: str) -> PerserbenchError:
    """A :class:`PerserbenchError` located at ``path:line`` (``line`` is 1-based)."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return PerserbenchError(f"{where}: {message}")


def root_env_var(corpus: str) -> str:
    """``PERSERBENCH_<CORPUS>_ROOT`` (``msp-podcast`` → ``PERSERBENCH_MSP_PODCAST_ROOT``)."""
    return "PERSERBENCH_" + re.sub(r"[^A-Za-z0-9]+", "_", corpus).upper() + "_ROOT"


def resolve_root(root: str | Path | None, corpus: str) -> Path:
    """The corpus root as an absolute path; a clear error when it was not given or is absent.

    ``root`` comes from ``--root`` (or a task's ``[corpus] options``); when it is not given
    the environment variable :func:`root_env_var` is used, so that a machine's corpus
    locations can be set once instead of on every command.
    """
    if root is None or str(root) == "":
        root = os.environ.get(root_env_var(corpus), "")
    if root is None or str(root) == "":
        raise PerserbenchError(
            f"corpus {corpus!r} needs its root directory: pass --root DIR or set {root_env_var(corpus)}"
        )
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise PerserbenchError(f"corpus {corpus!r}: root directory {path} does not exist")
    return path


def require_file(path: Path, corpus: str, hint: str = "") -> Path:
    """``path`` if it is a file, else an error naming it (e.g. a missing annotation file)."""
    if not path.is_file():
        extra = f"; {hint}" if hint else ""
        raise PerserbenchError(f"corpus {corpus!r}: required file {path} not found{extra}")
    return path


class OptionError(PerserbenchError):
    """A bad loader option; ``option`` names it, so a task can say whether the value came
    from its ``[corpus] options`` table or from ``--corpus-option``."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def check_policy(missing_audio: str) -> str:
    if missing_audio not in MISSING_AUDIO_POLICIES:
        raise OptionError("missing_audio",
                          f"missing_audio must be one of {', '.join(MISSING_AUDIO_POLICIES)}, "
                          f"got {missing_audio!r}")
    return missing_audio


def parse_bool(value: Any, name: str) -> bool:
    """Loader options arrive as TOML booleans or as CLI strings (``--corpus-option x=true``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise OptionError(name, f"option {name!r} must be true or false, got {value!r}")


def parse_int(value: Any, name: str, minimum: int | None = None) -> int:
    """An integer loader option, from TOML or from a CLI string, at least ``minimum``."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.lstrip("-").isdigit():
        raise OptionError(name, f"option {name!r} must be an integer, got {value!r}")
    number = int(text)
    if minimum is not None and number < minimum:
        raise OptionError(name, f"option {name!r} must be an integer >= {minimum}, got {number}")
    return number


class LabelVocabulary:
    """A corpus's canonical class names plus the other spellings its files use.

    Matching is case-insensitive and ignores surrounding whitespace, because releases are
    inconsistent about both; anything else unknown is an error naming the file and line,
    since silently dropping a label would change every listener's label set.
    """

    def __init__(self, classes: Sequence[str], aliases: Mapping[str, str] | None = None,
                 prefixes: Mapping[str, str] | None = None) -> None:
        self.classes = tuple(classes)
        self._lookup = {c.lower(): c for c in self.classes}
        for alias, target in (aliases or {}).items():
            if target not in self.classes:
                raise ValueError(f"alias {alias!r} targets unknown class {target!r}")
            self._lookup[alias.strip().lower()] = target
        # Free-text variants such as IEMOCAP's "Other:sarcastic" or MSP-Podcast's "Other-Bored".
        self._prefixes = {p.lower(): t for p, t in (prefixes or {}).items()}

    def get(self, token: str) -> str | None:
        key = token.strip().lower()
        if key in self._lookup:
            return self._lookup[key]
        for prefix, target in self._prefixes.items():
            if key.startswith(prefix):
                return target
        return None

    def resolve(self, token: str, path: str | Path, line: int | None, what: str = "label") -> str:
        found = self.get(token)
        if found is None:
            raise line_error(path, line, f"unknown {what} {token.strip()!r}; known: {', '.join(self.classes)}")
        return found


@dataclass
class CorpusBuilder:
    """Accumulates utterances and per-listener label sets, then builds a :class:`Corpus`.

    A listener who labels the same utterance twice (a repeated line) gets the union of both
    label sets: the corpus model has one row per (utterance, listener).
    """

    name: str
    vocabulary: tuple[str, ...]
    _utterances: list[Utterance] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)
    _labels: dict[tuple[int, str], set[int]] = field(default_factory=dict)
    _class_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._class_index = {c: i for i, c in enumerate(self.vocabulary)}

    def __contains__(self, utterance_id: str) -> bool:
        return utterance_id in self._index

    @property
    def utterance_ids(self) -> list[str]:
        return [u.id for u in self._utterances]

    def add_utterance(self, utterance: Utterance, where: tuple[str | Path, int | None] | None = None) -> int:
        """Add ``utterance``; adding the same id again must describe the same utterance."""
        if utterance.id in self._index:
            i = self._index[utterance.id]
            if self._utterances[i] != utterance:
                path, line = where or (self.name, None)
                raise line_error(path, line, f"utterance {utterance.id!r} is described twice, differently "
                                 f"({self._utterances[i]} vs {utterance})")
            return i
        self._index[utterance.id] = len(self._utterances)
        self._utterances.append(utterance)
        return self._index[utterance.id]

    def annotate(self, utterance_id: str, listener: str, labels: Iterable[str]) -> None:
        """Record that ``listener`` gave ``utterance_id`` the (canonical) class names ``labels``."""
        u = self._index[utterance_id]
        self._labels.setdefault((u, str(listener)), set()).update(self._class_index[c] for c in labels)

    def build(self, root: Path | str, missing_audio: str = "fail", metadata: dict[str, Any] | None = None,
              features: dict[str, np.ndarray] | None = None) -> Corpus:
        """Apply the missing-audio policy and assemble the corpus (annotations sorted by
        utterance, then listener, so the table does not depend on file reading order)."""
        check_policy(missing_audio)
        keep = np.ones(len(self._utterances), dtype=bool)
        missing = [i for i, u in enumerate(self._utterances) if u.audio_path is not None and not Path(u.audio_path).is_file()]
        if missing:
            shown = ", ".join(str(self._utterances[i].audio_path) for i in missing[:_SHOW_PATHS])
            more = ", ..." if len(missing) > _SHOW_PATHS else ""
            summary = f"{len(missing)} of {len(self._utterances)} audio files are missing (first: {shown}{more})"
            if missing_audio == "fail":
                raise PerserbenchError(
                    f"corpus {self.name!r} at {root}: {summary}; restore them, or drop those utterances "
                    "with missing_audio=skip (CLI: --corpus-option missing_audio=skip)"
                )
            warnings.warn(f"corpus {self.name!r}: skipping {summary}", MissingAudioWarning, stacklevel=3)
            keep[missing] = False
        new_index = np.cumsum(keep) - 1
        utterances = tuple(u for u, k in zip(self._utterances, keep) if k)
        rows = sorted((u, listener) for (u, listener) in self._labels if keep[u])
        labels = np.zeros((len(rows), len(self.vocabulary)), dtype=bool)
        for r, key in enumerate(rows):
            labels[r, sorted(self._labels[key])] = True
        ann = Annotations(
            np.array([new_index[u] for u, _ in rows], dtype=np.int64),
            np.array([listener for _, listener in rows], dtype=object),
            labels,
        )
        feats = {k: v[keep] for k, v in (features or {}).items()}
        meta = {"root": str(root), "missing_audio_skipped": len(missing) if missing_audio == "skip" else 0}
        meta.update(metadata or {})
        return Corpus(self.name, self.vocabulary, utterances, ann, feats, None, meta)


def read_csv_rows(path: Path, required: Sequence[str], delimiter: str = ",") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` from a CSV file with a header, checking the columns.

    A missing required column is reported against line 1 (the header); a row with too few
    or too many fields is reported against its own line. Values are stripped strings.
    """
    handle = io.StringIO(read_text(path, "file", encoding="utf-8-sig"), newline="")
    with handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise line_error(path, 1, "empty file; expected a header line") from None
        except csv.Error as exc:
            raise line_error(path, reader.line_num, f"malformed CSV ({exc})") from None
        absent = [c for c in required if c not in header]
        if absent:
            raise line_error(path, 1, f"missing column {absent[0]!r} (header has: {', '.join(h for h in header if h)})")
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise line_error(path, reader.line_num, f"malformed CSV ({exc})") from None
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise line_error(path, reader.line_num,
                                 f"row has {len(values)} fields but the header has {len(header)}")
            yield reader.line_num, {h: v.strip() for h, v in zip(header, values)}
