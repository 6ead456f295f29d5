"""CREMA-D loader (``crema-d --root CREMA-D``, a clone of the release repository).

Per-rater answers come from ``finishedResponses.csv`` (the release's final responses with
practice and repeated questions removed). Its header is
``,localid,pos,ans,ttr,queryType,numTries,clipNum,questNum,subType,clipName,sessionNums,
respEmo,respLevel,dispEmo,dispVal,dispLevel`` (the first, unnamed column is R's row name).
``localid`` is the rater; ``queryType`` is the stimulus: 1 = voice only, 2 = face only,
3 = audio-visual; a speech benchmark keeps only the voice-only answers (``query_types=1``;
pass e.g. ``query_types=1,3`` to add audio-visual). ``respEmo`` codes A, D, F, H, N, S are
anger, disgust, fear, happy, neutral, sad; any other code is an error naming the line. Each
answer is one class, so CREMA-D listeners are single-label (the corpus is still multi-hot).

Clip ``1001_DFA_ANG_XX``: actor ``1001`` is both speaker and session (CREMA-D has no
sessions; the held-out pool of the crema-d task is a set of actors). Audio:
``AudioWAV/<clipName>.wav``. Rows whose clip ends in ``_practice`` are skipped.

``drop_slow=true`` also removes answers given more than 10 s after the clip (``ttr``, time to
response in ms), i.e. answers where the rater had probably stopped attending.
"""

from __future__ import annotations

import re
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
    require_file,
    resolve_root,
)
from perserbench.errors import PerserbenchError

CREMA_CLASSES = ("anger", "disgust", "fear", "happy", "neutral", "sad")
CODES = LabelVocabulary(CREMA_CLASSES, {"A": "anger", "D": "disgust", "F": "fear", "H": "happy",
                                        "N": "neutral", "S": "sad"})
_STRICT_CODES = {"A", "D", "F", "H", "N", "S"}
_CLIP = re.compile(r"^(?P<actor>\d{4})_[A-Z]{3}_[A-Z]{3}_[A-Z]{2}$")
REQUIRED = ("localid", "queryType", "clipName", "respEmo")
SLOW_MS = 10_000


def _query_types(value: int | str | list | tuple) -> set[str]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = {str(v).strip() for v in items if str(v).strip()}
    if not out or not out <= {"1", "2", "3"}:
        raise PerserbenchError(f"query_types must be a subset of 1 (voice), 2 (face), 3 (audio-visual); got {value!r}")
    return out


@register_corpus("crema-d")
def load_crema_d(root: str | Path | None = None, missing_audio: str = "fail",
                 query_types: int | str | list | tuple = 1, drop_slow: bool | str = False,
                 cache_dir: str | None = None) -> Corpus:
    """Load CREMA-D's per-rater responses (see the module docstring)."""
    base = resolve_root(root, "crema-d")
    check_policy(missing_audio)
    keep_types = _query_types(query_types)
    slow = parse_bool(drop_slow, "drop_slow")
    path = require_file(base / "finishedResponses.csv", "crema-d",
                        "it is in the root of the CREMA-D repository (missing annotation file)")
    builder = CorpusBuilder("crema-d", CREMA_CLASSES)
    dropped_slow = 0
    for lineno, row in read_csv_rows(path, REQUIRED + (("ttr",) if slow else ())):
        if row["queryType"] not in keep_types:
            continue
        clip = row["clipName"]
        if clip.endswith("_practice"):
            continue
        match = _CLIP.match(clip)
        if match is None:
            raise line_error(path, lineno, f"clipName {clip!r} does not look like '1001_DFA_ANG_XX'")
        if not row["localid"]:
            raise line_error(path, lineno, "empty localid (rater id)")
        code = row["respEmo"]
        if code.upper() not in _STRICT_CODES:
            raise line_error(path, lineno, f"unknown respEmo code {code!r}; known codes: A, D, F, H, N, S")
        if slow:
            try:
                ttr = float(row["ttr"])
            except ValueError:
                raise line_error(path, lineno, f"ttr {row['ttr']!r} is not a number") from None
            if ttr > SLOW_MS:
                dropped_slow += 1
                continue
        actor = match["actor"]
        builder.add_utterance(Utterance(clip, actor, actor, str(base / "AudioWAV" / f"{clip}.wav")), (path, lineno))
        builder.annotate(clip, row["localid"], [CODES.resolve(code.upper(), path, lineno, "respEmo code")])
    return builder.build(base, missing_audio, {"query_types": sorted(keep_types), "dropped_slow": dropped_slow,
                                               "cache_dir": cache_dir})
