"""IEMOCAP loader (``iemocap --root IEMOCAP_full_release``).

Reads the per-evaluator categorical labels of ``Session{1..5}/dialog/EmoEvaluation/*.txt``.
Each file is one dialog; after a ``%`` comment header it has one block per turn::

    [6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]
    C-E2:	Neutral state;	()
    C-E3:	Neutral state; Frustration;	(tired, a bit annoyed)
    C-F1:	Neutral state;	(curious)
    A-E3:	val 3; act 2; dom  2;	()

The block header is ``[START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]`` (the EMOTION
code is the release's majority label and is ignored: personalization needs the individual
lines). Each ``C-<who>:`` line is one evaluator's categorical answer: one or more classes
separated by ``;`` then an optional free-text comment in parentheses. ``A-`` lines
(dimensional attributes) are skipped.

Listeners. ``C-E<n>`` lines come from the hired evaluators. By default the id is used as
written (``E1``, ``E2``, ...), i.e. ``E2`` is taken to be the same person in every session,
which is how listener-level work on IEMOCAP usually reads the release. The release does not
document that the numbering is consistent across sessions; ``evaluator_scope=session`` makes
the ids session-scoped (``Ses01_E2``) for a conservative reading in which an evaluator slot is
only known to be one person within a session. ``C-F1`` /
``C-M1`` lines were written by the session's own female / male actor — a different person in
every session and the performers themselves, not listeners perceiving someone else — so they
are left out by default; ``actor_evaluations=true`` keeps them as listeners ``Ses01_F1``,
``Ses01_M1``, ... (session-scoped, because the actors differ per session).

Utterances. ``Ses01F_impro01_F000``: session ``Ses01``; the speaker is the letter of the
last part (``F`` here; the letter after ``Ses01`` names who wore the motion-capture markers,
not who speaks), so speaker ``Ses01_F``. Audio: ``Session1/sentences/wav/<dialog>/<turn>.wav``
with ``<dialog>`` the evaluation file's name. Duration comes from the header times.
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
    resolve_root,
)
from perserbench.errors import PerserbenchError

IEMOCAP_CLASSES = (
    "Neutral state", "Frustration", "Anger", "Sadness", "Happiness", "Excited",
    "Surprise", "Fear", "Disgust", "Other",
)
VOCABULARY = LabelVocabulary(
    IEMOCAP_CLASSES,
    aliases={"Neutral": "Neutral state", "Excitement": "Excited"},
    prefixes={"Other": "Other"},  # "Other:sarcastic", "Other - bored", ...
)

_HEADER = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s+(?P<turn>\S+)\s+(?P<code>\S+)\s+\[[^\]]*\]\s*$"
)
_TURN = re.compile(r"^(?P<session>Ses\d{2})[FM]_.+_(?P<speaker>[FM])\d+$")
_CATEGORICAL = re.compile(r"^C-(?P<who>[A-Za-z]+\d*)\s*:(?P<rest>.*)$")


def split_comment(rest: str) -> tuple[str, str]:
    """``"Anger; Frustration;\\t(loud; rude)"`` → ``("Anger; Frustration;", "loud; rude")``.

    The comment is the trailing balanced ``(...)`` group; it may itself contain ``;`` or
    parentheses, so it is found by matching brackets from the end, not by splitting.
    """
    text = rest.rstrip()
    if not text.endswith(")"):
        return text, ""
    depth = 0
    for pos in range(len(text) - 1, -1, -1):
        if text[pos] == ")":
            depth += 1
        elif text[pos] == "(":
            depth -= 1
            if depth == 0:
                return text[:pos], text[pos + 1:-1]
    return text, ""  # unbalanced: treat everything as labels, the label check will complain


def parse_categorical(line: str, path: Path, lineno: int) -> tuple[str, list[str], str]:
    """One ``C-<who>:`` line → (who, canonical class names, comment)."""
    match = _CATEGORICAL.match(line)
    if match is None:
        raise line_error(path, lineno, f"malformed evaluator line {line!r}")
    labels_part, comment = split_comment(match["rest"])
    tokens = [t.strip() for t in labels_part.split(";") if t.strip()]
    if not tokens:
        raise line_error(path, lineno, f"evaluator line has no emotion: {line!r}")
    names = [VOCABULARY.resolve(t, path, lineno, "IEMOCAP emotion") for t in tokens]
    return match["who"], names, comment.strip()


def _session_dirs(root: Path) -> list[tuple[int, Path]]:
    found = sorted((int(p.name[len("Session"):]), p) for p in root.glob("Session*")
                   if p.is_dir() and p.name[len("Session"):].isdigit())
    if not found:
        raise PerserbenchError(
            f"corpus 'iemocap': no Session1..Session5 folders under {root}; --root must be the "
            "IEMOCAP_full_release folder"
        )
    return found


@register_corpus("iemocap")
def load_iemocap(root: str | Path | None = None, missing_audio: str = "fail",
                 actor_evaluations: bool | str = False, evaluator_scope: str = "corpus",
                 cache_dir: str | None = None) -> Corpus:
    """Load IEMOCAP's per-evaluator categorical annotations (see the module docstring)."""
    base = resolve_root(root, "iemocap")
    check_policy(missing_audio)
    keep_actors = parse_bool(actor_evaluations, "actor_evaluations")
    if evaluator_scope not in ("corpus", "session"):
        raise PerserbenchError(f"evaluator_scope must be 'corpus' or 'session', got {evaluator_scope!r}")
    builder = CorpusBuilder("iemocap", IEMOCAP_CLASSES)
    n_files = 0
    for number, session_dir in _session_dirs(base):
        eval_dir = session_dir / "dialog" / "EmoEvaluation"
        files = sorted(p for p in eval_dir.glob("Ses*.txt") if p.is_file()) if eval_dir.is_dir() else []
        if not files:
            raise PerserbenchError(
                f"corpus 'iemocap': missing annotation files: no {eval_dir}/Ses*.txt (each session "
                "needs its dialog/EmoEvaluation folder from the release)"
            )
        for path in files:
            n_files += 1
            _read_dialog(path, session_dir / "sentences" / "wav" / path.stem, builder, keep_actors,
                         evaluator_scope == "session")
    return builder.build(base, missing_audio, {"annotation_files": n_files, "actor_evaluations": keep_actors,
                                               "evaluator_scope": evaluator_scope, "cache_dir": cache_dir})


def _read_dialog(path: Path, wav_dir: Path, builder: CorpusBuilder, keep_actors: bool,
                 session_scoped: bool) -> None:
    current: str | None = None
    session = ""
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except UnicodeDecodeError:
        lines = path.read_text(encoding="latin-1").splitlines()
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith(("%", "A-")):
            continue
        if line.startswith("["):
            header = _HEADER.match(line)
            if header is None:
                raise line_error(path, lineno, "malformed turn header; expected "
                                 "'[START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]'")
            turn = _TURN.match(header["turn"])
            if turn is None:
                raise line_error(path, lineno, f"turn name {header['turn']!r} does not look like "
                                 "'Ses01F_impro01_F000'")
            current, session = header["turn"], turn["session"]
            if current in builder:
                raise line_error(path, lineno, f"turn {current!r} appears twice")
            duration = round(float(header["end"]) - float(header["start"]), 4)
            builder.add_utterance(Utterance(current, f"{session}_{turn['speaker']}", session,
                                            str(wav_dir / f"{current}.wav"), duration))
        elif line.startswith("C-"):
            if current is None:
                raise line_error(path, lineno, "evaluator line before any turn header")
            who, names, _comment = parse_categorical(line, path, lineno)
            if who[0] in "FM":
                if not keep_actors:
                    continue
                who = f"{session}_{who}"
            elif session_scoped:
                who = f"{session}_{who}"
            builder.annotate(current, who, names)
        else:
            raise line_error(path, lineno, f"unrecognised line {line[:60]!r}; expected a turn header, "
                             "a C- (categorical) or A- (attribute) line")
