"""The corpus model shared by every loader (DESIGN §4).

A corpus is a list of utterances plus a *long* table of annotations: one row per
(utterance, listener) with that listener's multi-hot label vector over the corpus
vocabulary. Annotations are kept as parallel numpy arrays rather than Python objects because
every later step (splits, episodes, consensus labels) is a vectorised selection over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perserbench.errors import PerserbenchError


@dataclass(frozen=True)
class Utterance:
    """One audio clip. ``session`` and ``speaker`` drive the utterance (held-out) split."""

    id: str
    speaker: str
    session: str
    audio_path: str | None = None
    duration: float | None = None


@dataclass(frozen=True)
class Annotations:
    """Long annotation table: row ``a`` says listener ``listener[a]`` gave utterance
    ``utterance[a]`` (an index into ``Corpus.utterances``) the label set ``labels[a]``."""

    utterance: np.ndarray  # int64 [A]
    listener: np.ndarray  # str (object) [A]
    labels: np.ndarray  # bool [A, C]

    def __post_init__(self) -> None:
        n = len(self.utterance)
        if len(self.listener) != n or self.labels.shape[0] != n or self.labels.ndim != 2:
            raise ValueError("Annotations arrays must be parallel: utterance[A], listener[A], labels[A, C]")

    def __len__(self) -> int:
        return len(self.utterance)

    def select(self, mask: np.ndarray) -> Annotations:
        return Annotations(self.utterance[mask], self.listener[mask], self.labels[mask])


@dataclass
class Corpus:
    """A loaded corpus.

    ``features`` holds in-memory utterance features keyed by feature name, each an array of
    shape ``[N_utterances, L_layers, D]`` aligned with ``utterances`` (the synthetic corpus
    and feature-row manifests carry their own; audio corpora get theirs from the feature
    cache). ``truth`` is the generative ground truth of a synthetic corpus (used only by the
    ``oracle`` reference) and ``None`` for real corpora.
    """

    name: str
    vocabulary: tuple[str, ...]
    utterances: tuple[Utterance, ...]
    annotations: Annotations
    features: dict[str, np.ndarray] = field(default_factory=dict)
    truth: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.annotations.labels.shape[1] != len(self.vocabulary):
            raise ValueError(
                f"corpus {self.name!r}: label matrix has {self.annotations.labels.shape[1]} "
                f"columns but the vocabulary has {len(self.vocabulary)} classes"
            )

    @property
    def listeners(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.annotations.listener.tolist())))

    @property
    def utterance_ids(self) -> np.ndarray:
        return np.array([u.id for u in self.utterances], dtype=object)

    def project(self, labels: tuple[str, ...], label_map: Mapping[str, str] | None = None) -> Corpus:
        """Map the corpus vocabulary onto a task's label set.

        ``label_map`` maps corpus class names to task class names (several may map to one,
        e.g. IEMOCAP's "Excited" → "happy"). Without a ``label_map`` every class listeners
        chose must be a task label: a class outside the label set is an error (a typo in a
        manifest must not vanish). A ``label_map`` is a deliberate selection: corpus classes
        it does not map (and that are not task labels) are dropped, and annotation rows left
        with no label are dropped, because an annotation that chose only out-of-task classes
        carries no information for the task. A task label that no annotation carries is an
        error: every method would score 0 on it and the macro-F1 would be distorted.
        """
        label_map = dict(label_map or {})
        for src, dst in label_map.items():
            if dst not in labels:
                raise PerserbenchError(
                    f"label_map maps {src!r} to {dst!r}, which is not in the task labels {list(labels)}"
                )
        projection = np.zeros((len(self.vocabulary), len(labels)), dtype=bool)
        for i, name in enumerate(self.vocabulary):
            target = label_map.get(name, name if name in labels else None)
            if target is not None:
                projection[i, labels.index(target)] = True
        if not projection.any():
            raise PerserbenchError(
                f"no class of corpus {self.name!r} ({list(self.vocabulary)}) maps to the task "
                f"labels {list(labels)}; add a label_map to the task"
            )
        counts = self.annotations.labels.sum(axis=0)
        outside = [(name, int(n)) for name, n, row in zip(self.vocabulary, counts, projection) if n and not row.any()]
        if outside and not label_map:
            name, n = outside[0]
            raise PerserbenchError(
                f"corpus {self.name!r}: label {name!r} ({n} annotations) is not a task label "
                f"{list(labels)}; add it to 'corpus.labels', or give a 'corpus.label_map' (which keeps "
                "only the classes it maps)"
            )
        new = (self.annotations.labels.astype(np.int32) @ projection.astype(np.int32)) > 0
        keep = new.any(axis=1)
        absent = [name for name, n in zip(labels, new[keep].sum(axis=0)) if n == 0]
        if absent:
            raise PerserbenchError(
                f"task label {absent[0]!r} never occurs in corpus {self.name!r} (no listener chose it, so "
                "every method would score 0 on it); remove it from 'corpus.labels' or map a corpus class "
                "to it in 'corpus.label_map'"
            )
        ann = Annotations(self.annotations.utterance[keep], self.annotations.listener[keep], new[keep])
        return Corpus(self.name, tuple(labels), self.utterances, ann, self.features, self.truth, dict(self.metadata))
