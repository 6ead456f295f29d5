"""The one metric module (DESIGN §2): per-episode scores, per-class counts and their aggregation.

Emotions are multi-label, so an episode's predictions are a probability per class; a class is
predicted when its probability reaches the threshold (0.5, or per-class thresholds a method
derived from its support set).

Macro-F1 convention: a class that is neither in the truth nor predicted anywhere in an
episode's query set has an undefined F1 (0/0) and is left out of the macro average, which
is scikit-learn's ``f1_score(average=None, zero_division=np.nan)`` followed by ``nanmean``.
Written here in a few numpy lines because scikit-learn is not a dependency. Every annotation
carries at least one class, so at least one class is always defined.

Two macro-F1s are computed (docs/metrics.md compares them):

* **per-episode** ``macro_f1``: F1 per class on the episode's ~20 query items, macro over the
  defined classes, then the mean over a listener's episodes. A class absent from an episode's
  truth counts only when predicted, and then scores 0, so one false positive on a rare class
  costs a whole class's share of the episode: it favours cautious predictors.
* **listener-pooled** ``pooled_macro_f1``: each episode's query is still predicted by the
  model adapted on that episode's support, but the per-class tp/fp/fn counts are summed over
  the listener's episodes (and seeds) before F1 is taken per class and macro-averaged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from perserbench.results import (
    EPISODE_METRICS,
    POOLED_METRIC,
    EpisodeRecord,
    ListenerRecord,
    SummaryRecord,
)
from perserbench.stats import hierarchical_bootstrap_ci, hierarchical_bootstrap_cis

DEFAULT_THRESHOLD = 0.5


def class_counts(
    proba: np.ndarray, truth: np.ndarray, thresholds: np.ndarray | float | None = None
) -> dict[str, list[int]]:
    """Per-class ``tp``, ``fp`` and ``fn`` of the thresholded ``proba`` [Q, C] against ``truth`` [Q, C]."""
    proba = np.asarray(proba, dtype=float)
    truth = np.asarray(truth, dtype=bool)
    if proba.shape != truth.shape or proba.ndim != 2:
        raise ValueError(f"proba {proba.shape} and truth {truth.shape} must both be [Q, C]")
    if not np.isfinite(proba).all():
        raise ValueError("predicted probabilities contain NaN or inf")
    threshold = DEFAULT_THRESHOLD if thresholds is None else np.asarray(thresholds, dtype=float)
    pred = proba >= threshold
    return {"tp": [int(x) for x in (pred & truth).sum(axis=0)], "fp": [int(x) for x in (pred & ~truth).sum(axis=0)],
            "fn": [int(x) for x in (~pred & truth).sum(axis=0)]}


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[float, float]:
    """(macro-F1 over the defined classes, micro-F1) of per-class counts; 1.0 when nothing is
    defined (no truth and no prediction at all: nothing was got wrong)."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    defined = denom > 0
    macro = float(np.mean(2 * tp[defined] / denom[defined])) if defined.any() else 1.0
    micro_denom = denom.sum()
    micro = float(2 * tp.sum() / micro_denom) if micro_denom > 0 else 1.0
    return macro, micro


def episode_metrics(
    proba: np.ndarray, truth: np.ndarray, thresholds: np.ndarray | float | None = None
) -> dict[str, float]:
    """macro-F1, micro-F1 and top-1 hit accuracy of ``proba`` [Q, C] against ``truth`` [Q, C]."""
    counts = class_counts(proba, truth, thresholds)
    proba, truth = np.asarray(proba, dtype=float), np.asarray(truth, dtype=bool)
    macro, micro = f1_from_counts(counts["tp"], counts["fp"], counts["fn"])
    top1 = float(truth[np.arange(len(truth)), proba.argmax(axis=1)].mean()) if len(truth) else 0.0
    return {"macro_f1": macro, "micro_f1": micro, "top1": top1}


def pooled_f1(episodes: Sequence[EpisodeRecord]) -> float:
    """Listener-pooled macro-F1: the episodes' per-class counts summed, then F1 per class,
    macro over the classes defined in the pool. Why pooled: a listener's ~10 episodes × 20
    query items give each class enough items that absent classes rarely decide the score."""
    if not episodes:
        raise ValueError("pooled_f1 needs at least one episode")
    tp, fp, fn = (np.sum([getattr(r, c) for r in episodes], axis=0) for c in ("tp", "fp", "fn"))
    return f1_from_counts(tp, fp, fn)[0]


def _by_listener(episodes: Iterable[EpisodeRecord]) -> dict[tuple[str, int], dict[str, list[EpisodeRecord]]]:
    cells: dict[tuple[str, int], dict[str, list[EpisodeRecord]]] = defaultdict(lambda: defaultdict(list))
    for rec in episodes:
        cells[(rec.scenario, rec.shots)][rec.listener].append(rec)
    return cells


def listener_aggregates(episodes: Iterable[EpisodeRecord]) -> list[ListenerRecord]:
    """Per (listener, scenario, shots): mean of each episode metric over episodes and seeds,
    and the pooled macro-F1 of all of them."""
    out = []
    for (scenario, shots), by_listener in _by_listener(episodes).items():
        for listener, recs in by_listener.items():
            means = {m: float(np.mean([getattr(r, m) for r in recs])) for m in EPISODE_METRICS}
            out.append(ListenerRecord(listener, scenario, shots, len(recs), **means,
                                      pooled_macro_f1=pooled_f1(recs)))
    return sorted(out, key=lambda r: (r.listener, r.scenario, r.shots))


def summarize(
    episodes: Iterable[EpisodeRecord], n_resamples: int = 2000, seed: int = 0
) -> list[SummaryRecord]:
    """Headline per (scenario, shots, metric): mean over listeners of the listener scores.

    CI (95%): for the episode metrics, the hierarchical bootstrap (listeners, then their
    episodes); for the pooled metric, the bootstrap over listeners of their pooled scores
    (each listener's score already pools its episodes, and resampling the top level alone is
    what estimates the variance of a mean over listeners)."""
    out = []
    for (scenario, shots), by_listener in sorted(_by_listener(episodes).items()):
        listeners = sorted(by_listener)
        n_episodes = sum(len(v) for v in by_listener.values())
        groups = [np.array([[getattr(r, m) for m in EPISODE_METRICS] for r in by_listener[name]])
                  for name in listeners]  # [episodes, metrics] per listener: one draw serves every metric
        cis = hierarchical_bootstrap_cis(groups, n_resamples=n_resamples, seed=seed)
        for metric, (mean, low, high) in zip(EPISODE_METRICS, cis):
            out.append(SummaryRecord(scenario, shots, metric, mean, low, high, len(listeners), n_episodes))
        pooled = [np.array([pooled_f1(by_listener[name])]) for name in listeners]
        mean, low, high = hierarchical_bootstrap_ci(pooled, n_resamples=n_resamples, seed=seed)
        out.append(SummaryRecord(scenario, shots, POOLED_METRIC, mean, low, high, len(listeners), n_episodes))
    return out
