import numpy as np
import pytest

from perserbench.metrics import (
    class_counts,
    episode_metrics,
    listener_aggregates,
    pooled_f1,
    summarize,
)
from perserbench.results import EpisodeRecord


def test_hand_computed_episode():
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=bool)
    proba = np.array([[0.9, 0.1, 0.2], [0.6, 0.4, 0.1], [0.2, 0.7, 0.8], [0.1, 0.3, 0.4]])
    m = episode_metrics(proba, truth)
    # class a: tp=2 fp=0 fn=0 -> 1; class b: tp=0 fp=1 fn=2 -> 0; class c: tp=1 -> 1
    assert m["macro_f1"] == pytest.approx((1 + 0 + 1) / 3)
    # micro: tp=3 fp=1 fn=2 -> 6/9
    assert m["micro_f1"] == pytest.approx(6 / 9)
    # argmax: a(hit) a(hit) c(hit) c(miss)
    assert m["top1"] == pytest.approx(0.75)


def test_classes_absent_everywhere_are_left_out_of_macro():
    truth = np.array([[1, 0, 0], [1, 0, 0]], dtype=bool)
    proba = np.array([[0.9, 0.1, 0.1], [0.2, 0.1, 0.1]])
    m = episode_metrics(proba, truth)
    assert m["macro_f1"] == pytest.approx(2 / 3)  # only class a is defined: tp=1, fn=1


def test_per_class_thresholds_replace_default():
    truth = np.array([[0, 1], [0, 1]], dtype=bool)
    proba = np.array([[0.1, 0.3], [0.2, 0.35]])
    assert episode_metrics(proba, truth)["macro_f1"] == 0.0
    assert episode_metrics(proba, truth, np.array([0.5, 0.25]))["macro_f1"] == 1.0


def test_shape_mismatch_and_nan_raise():
    with pytest.raises(ValueError):
        episode_metrics(np.zeros((2, 3)), np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError):
        episode_metrics(np.full((1, 2), np.nan), np.ones((1, 2), dtype=bool))


def _rec(listener, ep, value, shots=5, tp=(1, 0), fp=(0, 0), fn=(0, 0)):
    return EpisodeRecord(0, listener, "seen", shots, ep, 0, shots, 10, value, value, value, list(tp), list(fp), list(fn))


def test_listener_mean_then_listener_average():
    recs = [_rec("x", 0, 0.2), _rec("x", 1, 0.4), _rec("y", 0, 1.0)]
    listeners = {r.listener: r for r in listener_aggregates(recs)}
    assert listeners["x"].macro_f1 == pytest.approx(0.3)
    assert listeners["x"].n_episodes == 2
    summary = next(s for s in summarize(recs) if s.metric == "macro_f1")
    assert summary.mean == pytest.approx(0.65)  # listeners weigh equally, not episodes
    assert summary.ci_low <= summary.mean <= summary.ci_high
    assert (summary.n_listeners, summary.n_episodes) == (2, 3)


def test_bootstrap_ci_is_deterministic_and_narrows_with_more_listeners():
    rng = np.random.default_rng(0)
    few = [_rec(f"l{i}", e, float(rng.random())) for i in range(4) for e in range(5)]
    many = [_rec(f"l{i}", e, float(rng.random())) for i in range(40) for e in range(5)]
    s1 = summarize(few)[0]
    assert summarize(few)[0] == s1
    s2 = summarize(many)[0]
    assert (s2.ci_high - s2.ci_low) < (s1.ci_high - s1.ci_low)


def test_class_counts_agree_with_the_hand_computed_episode():
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=bool)
    proba = np.array([[0.9, 0.1, 0.2], [0.6, 0.4, 0.1], [0.2, 0.7, 0.8], [0.1, 0.3, 0.4]])
    assert class_counts(proba, truth) == {"tp": [2, 0, 1], "fp": [0, 1, 0], "fn": [0, 2, 0]}


def test_pooled_f1_sums_counts_before_f1_and_is_not_the_mean_of_episode_f1():
    # Episode 0: class b absent from the truth and predicted once -> per-episode macro (1 + 0) / 2.
    # Episode 1: class b present and found -> per-episode macro 1. Mean of episodes: 0.75.
    # Pooled: a tp=2; b tp=1 fp=1 -> F1 2/3; macro (1 + 2/3) / 2 = 5/6.
    e0 = _rec("x", 0, 0.5, tp=(1, 0), fp=(0, 1), fn=(0, 0))
    e1 = _rec("x", 1, 1.0, tp=(1, 1), fp=(0, 0), fn=(0, 0))
    assert pooled_f1([e0, e1]) == pytest.approx(5 / 6)
    (listener,) = listener_aggregates([e0, e1])
    assert listener.pooled_macro_f1 == pytest.approx(5 / 6)
    assert listener.macro_f1 == pytest.approx(0.75)
    pooled = next(s for s in summarize([e0, e1]) if s.metric == "pooled_macro_f1")
    assert pooled.mean == pytest.approx(5 / 6) and pooled.ci_low == pooled.ci_high == pooled.mean


def test_pooled_summary_is_the_mean_over_listeners_with_a_listener_bootstrap_ci():
    recs = [_rec("x", 0, 1.0, tp=(2, 0), fp=(0, 0), fn=(0, 0)), _rec("y", 0, 0.0, tp=(0, 0), fp=(1, 0), fn=(1, 0)),
            _rec("z", 0, 0.5, tp=(1, 0), fp=(1, 0), fn=(1, 0))]
    pooled = next(s for s in summarize(recs) if s.metric == "pooled_macro_f1")
    assert pooled.mean == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert 0.0 <= pooled.ci_low < pooled.mean < pooled.ci_high <= 1.0
