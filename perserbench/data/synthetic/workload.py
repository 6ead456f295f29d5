"""Who rates what: raters per utterance and how the work is spread over listeners.

Each utterance gets 3–5 raters (mean 3.5, as in IEMOCAP), chosen without replacement with
per-listener activity weights. Two workloads:

* ``even`` (the default; the corpus the benchmark started with): activity weights uniform in
  [0.6, 1.4], so every listener labels a similar share (IEMOCAP-like: a few evaluators
  rated everything).
* ``zipf``: activity ``∝ 1 / rank^ZIPF_EXPONENT`` over a random ranking of the listeners —
  the heavy tail of crowd-sourced corpora (MSP-Podcast, CREMA-D), where a few raters label
  most utterances and most label few. Light listeners then have few labels per scenario:
  fewer are eligible for testing and the meta-train set is dominated by the heavy ones.
"""

from __future__ import annotations

import numpy as np

WORKLOADS = ("even", "zipf")
RATERS_PER_UTTERANCE = ((3, 0.6), (4, 0.3), (5, 0.1))  # mean 3.5
ZIPF_EXPONENT = 1.0


def listener_activity(rng: np.random.Generator, n_listeners: int, workload: str) -> np.ndarray:
    """Relative activity weight per listener (the order of draws is part of the corpus)."""
    activity = rng.uniform(0.6, 1.4, size=n_listeners)
    if workload == "zipf":
        activity = 1.0 / (1.0 + rng.permutation(n_listeners)) ** ZIPF_EXPONENT
    return activity


def assign_raters(rng: np.random.Generator, n_utterances: int, activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Annotation rows ``(utterance, listener index)``: each utterance's raters, drawn without
    replacement with probability proportional to ``activity``, in listener order."""
    counts, probs = zip(*RATERS_PER_UTTERANCE)
    n_raters = rng.choice(counts, size=n_utterances, p=probs)
    weights = activity / activity.sum()
    rows_u, rows_j = [], []
    for u in range(n_utterances):
        chosen = rng.choice(len(activity), size=n_raters[u], replace=False, p=weights)
        rows_u.extend([u] * len(chosen))
        rows_j.extend(sorted(chosen.tolist()))
    return np.asarray(rows_u), np.asarray(rows_j)
