"""Expected-F1-optimal decisions (perserbench.expected_f1), checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from perserbench.expected_f1 import expected_f1_top_k, optimal_thresholds, poisson_binomial_prefixes
from perserbench.metrics import episode_metrics


def _outcomes(n: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=n)))


def _probability(outcomes: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.prod(np.where(outcomes, p, 1.0 - p), axis=tuple(range(1, outcomes.ndim)))


def test_poisson_binomial_prefixes_match_enumeration():
    p = np.array([0.9, 0.2, 0.5, 0.05])
    table = poisson_binomial_prefixes(p)
    for k in range(len(p) + 1):
        ys = _outcomes(k)
        counts = ys.sum(axis=1) if k else np.zeros(1, dtype=int)
        weights = _probability(ys, p[:k]) if k else np.ones(1)
        expected = np.bincount(counts, weights=weights, minlength=len(p) + 1)
        np.testing.assert_allclose(table[k], expected, atol=1e-12)


def test_expected_f1_of_each_top_k_matches_enumeration():
    rng = np.random.default_rng(0)
    p = np.sort(rng.random(6) ** 2)[::-1]
    ys = _outcomes(len(p))
    weights = _probability(ys, p)
    values = expected_f1_top_k(p)
    assert values[0] == 0.0
    for k in range(1, len(p) + 1):
        tp, positives = ys[:, :k].sum(axis=1), ys.sum(axis=1)
        assert values[k] == pytest.approx(float((weights * 2 * tp / (k + positives)).sum()), abs=1e-12)


def _expected_macro(p: np.ndarray, ys: np.ndarray, weights: np.ndarray, thresholds: np.ndarray) -> float:
    """Exact expected macro-F1 of ``thresholds`` by the metric itself, over every outcome."""
    return float(sum(w * episode_metrics(p, y, thresholds)["macro_f1"] for w, y in zip(weights, ys)))


@pytest.mark.parametrize("items,classes", [(3, 2), (2, 3)])
def test_optimal_thresholds_beat_every_per_class_top_k_combination(items, classes):
    """On small problems no combination of per-class thresholds has a higher exact expected
    macro-F1 under the metric's own conventions (an absent, unpredicted class is dropped; no
    class defined scores 1), enumerating every outcome and every top-k per class."""
    rng = np.random.default_rng(items)
    ys = _outcomes(items * classes).reshape(-1, items, classes)
    for _ in range(20):
        p = (rng.random((items, classes)) ** rng.uniform(0.5, 4)).astype(np.float32).astype(float)
        weights = _probability(ys, p)
        candidates = [[np.sort(p[:, c])[-1] + 1e-6, *np.sort(p[:, c])[::-1]] for c in range(classes)]
        best = max(_expected_macro(p, ys, weights, np.array(t)) for t in itertools.product(*candidates))
        assert _expected_macro(p, ys, weights, optimal_thresholds(p)) >= best - 1e-12


def test_thresholds_select_exactly_a_top_k_set_of_the_float32_values():
    rng = np.random.default_rng(2)
    p = rng.random((20, 6)).astype(np.float32)
    p[:, 5] = 1e-4  # a class nobody chose: best left unpredicted
    p[:, 4] = 0.99  # a class everybody chose: all items predicted
    thresholds = optimal_thresholds(p)
    for c in range(6):
        chosen = p[:, c] >= thresholds[c]
        if chosen.any():
            assert p[chosen, c].min() > p[~chosen, c].max(initial=-1.0)
    assert not (p[:, 5] >= thresholds[5]).any() and (p[:, 4] >= thresholds[4]).all()
    # float64 inputs that round to the same float32 values get the same decision.
    assert np.array_equal(optimal_thresholds(p.astype(np.float64)), thresholds)


def test_ties_are_never_split():
    p = np.array([[0.6], [0.4], [0.4], [0.1]], dtype=np.float32)
    chosen = p[:, 0] >= optimal_thresholds(p)[0]
    assert chosen[1] == chosen[2]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="proba must be"):
        optimal_thresholds(np.zeros((0, 3)))


def test_stacked_episodes_get_exactly_their_own_thresholds():
    """Episodes stacked as [E, Q, C] (how the annotator model decides on its reference episodes)
    get bit for bit the thresholds each gets alone, ties and silent classes included."""
    rng = np.random.default_rng(5)
    episodes = np.round(rng.random((12, 10, 4)) ** 2, 2)
    episodes[3, :, 1] = 0.0  # a class best left unpredicted
    stacked = optimal_thresholds(episodes)
    assert stacked.shape == (12, 4)
    assert np.array_equal(stacked, np.stack([optimal_thresholds(e) for e in episodes]))
