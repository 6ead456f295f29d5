"""The one metric module (DESIGN §2): per-episode scores and their aggregation.

Emotions are multi-label, so an episode's predictions are a probability per class; a class is
predicted when its probability reaches the threshold (0.5, or per-class thresholds a method
derived from its support set).

Macro-F1 convention: a class that is neither in the truth nor predicted anywhere in an
episode's query set has an undefined F1 (0/0) and is left out of the macro average, which
is scikit-learn's ``f1_score(average=None, zero_division=np.nan)`` followed by ``nanmean``.
Written here in a few numpy lines because scikit-learn is not a dependency. Every annotation
carries at least one class, so at least one class is always defined.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from perserbench.results import METRICS, EpisodeRecord, ListenerRecord, SummaryRecord
from perserbench.stats import hierarchical_bootstrap_ci

DEFAULT_THRESHOLD = 0.5


def episode_metrics(
    proba: np.ndarray, truth: np.ndarray, thresholds: np.ndarray | float | None = None
) -> dict[str, float]:
    """macro-F1, micro-F1 and top-1 hit accuracy of ``proba`` [Q, C] against ``truth`` [Q, C]."""
    proba = np.asarray(proba, dtype=float)
    truth = np.asarray(truth, dtype=bool)
    if proba.shape != truth.shape or proba.ndim != 2:
        raise ValueError(f"proba {proba.shape} and truth {truth.shape} must both be [Q, C]")
    if not np.isfinite(proba).all():
        raise ValueError("predicted probabilities contain NaN or inf")
    threshold = DEFAULT_THRESHOLD if thresholds is None else np.asarray(thresholds, dtype=float)
    pred = proba >= threshold
    tp = (pred & truth).sum(axis=0)
    fp = (pred & ~truth).sum(axis=0)
    fn = (~pred & truth).sum(axis=0)
    denom = 2 * tp + fp + fn
    defined = denom > 0
    macro = float(np.mean(2 * tp[defined] / denom[defined])) if defined.any() else 1.0
    micro_denom = denom.sum()
    micro = float(2 * tp.sum() / micro_denom) if micro_denom > 0 else 1.0
    top1 = float(truth[np.arange(len(truth)), proba.argmax(axis=1)].mean()) if len(truth) else 0.0
    return {"macro_f1": macro, "micro_f1": micro, "top1": top1}


def listener_aggregates(episodes: Iterable[EpisodeRecord]) -> list[ListenerRecord]:
    """Per (listener, scenario, shots): mean of each metric over episodes and seeds."""
    groups: dict[tuple[str, str, int], list[EpisodeRecord]] = defaultdict(list)
    for rec in episodes:
        groups[(rec.listener, rec.scenario, rec.shots)].append(rec)
    out = []
    for (listener, scenario, shots), recs in sorted(groups.items()):
        means = {m: float(np.mean([getattr(r, m) for r in recs])) for m in METRICS}
        out.append(ListenerRecord(listener, scenario, shots, len(recs), **means))
    return out


def summarize(
    episodes: Iterable[EpisodeRecord], n_resamples: int = 2000, seed: int = 0
) -> list[SummaryRecord]:
    """Headline per (scenario, shots, metric): mean over listeners of listener means, with a
    95% hierarchical-bootstrap CI (listeners, then their episodes)."""
    cells: dict[tuple[str, int], dict[str, list[EpisodeRecord]]] = defaultdict(lambda: defaultdict(list))
    for rec in episodes:
        cells[(rec.scenario, rec.shots)][rec.listener].append(rec)
    out = []
    for (scenario, shots), by_listener in sorted(cells.items()):
        listeners = sorted(by_listener)
        n_episodes = sum(len(v) for v in by_listener.values())
        for metric in METRICS:
            groups = [np.array([getattr(r, metric) for r in by_listener[name]]) for name in listeners]
            mean, low, high = hierarchical_bootstrap_ci(groups, n_resamples=n_resamples, seed=seed)
            out.append(SummaryRecord(scenario, shots, metric, mean, low, high, len(listeners), n_episodes))
    return out
