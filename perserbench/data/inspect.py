"""What a loaded corpus contains: the counts a researcher checks before trusting a task on it.

One function, :func:`corpus_summary`, feeds both the rich table and ``--json`` of
``perserbench data inspect``, so the two can never disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perserbench.data.agreement import fleiss_kappa
from perserbench.data.corpus import Corpus


def corpus_summary(corpus: Corpus) -> dict[str, Any]:
    """Counts, per-listener annotation statistics, label distribution and Fleiss' kappa."""
    ann = corpus.annotations
    listeners, per_listener = np.unique(ann.listener.astype(str), return_counts=True)
    raters = np.bincount(ann.utterance, minlength=len(corpus.utterances))
    label_counts = ann.labels.sum(axis=0)
    try:
        kappa: float | None = fleiss_kappa(corpus)
    except ValueError:  # no utterance with two raters: agreement is undefined
        kappa = None
    return {
        "corpus": corpus.name,
        "utterances": len(corpus.utterances),
        "speakers": len({u.speaker for u in corpus.utterances}),
        "sessions": len({u.session for u in corpus.utterances}),
        "listeners": len(listeners),
        "annotations": len(ann),
        "annotations_per_listener": {
            "min": int(per_listener.min()) if len(per_listener) else 0,
            "median": float(np.median(per_listener)) if len(per_listener) else 0.0,
            "max": int(per_listener.max()) if len(per_listener) else 0,
        },
        "labels_per_listener": {name: int(n) for name, n in zip(listeners.tolist(), per_listener.tolist())},
        "raters_per_utterance": float(raters[raters > 0].mean()) if (raters > 0).any() else 0.0,
        "label_distribution": {
            name: float(n / max(label_counts.sum(), 1)) for name, n in zip(corpus.vocabulary, label_counts.tolist())
        },
        "labels_per_annotation": float(ann.labels.sum(axis=1).mean()) if len(ann) else 0.0,
        "fleiss_kappa": kappa,
        "features": {key: list(value.shape) for key, value in corpus.features.items()},
    }
