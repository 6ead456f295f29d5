"""Deciding classes optimally for per-episode macro-F1, given true probabilities.

Why: a ceiling must be a ceiling. Thresholding the true probabilities at 0.5 is not optimal
for F1 (on ``synthetic`` thresholding at 0.3 scores higher), so an "oracle" scored at 0.5
understates what is achievable and a method could beat it honestly. This module turns
probabilities that are *exact and independent across items* (the ``oracle``'s, or those of a
calibrated model) into the per-class thresholds that maximise the expected score of the
metric in :mod:`perserbench.metrics`.

Per class, with independent item probabilities, the expected-F1-optimal prediction set is
the top-k items by probability for some k (Lewis 1995; Jansche 2007; Ye et al. 2012,
"Optimizing F-measures: a tale of two approaches"). The expected F1 of each k is exact: with
TP the positives inside the top-k and N the positives outside it (two independent
Poisson-binomial counts, computed by a small dynamic programme),
``E[F1_k] = Σ_a Σ_b P(TP = a) P(N = b) · 2a / (k + a + b)`` for k ≥ 1.

k = 0 is where the metric's convention matters: a class absent from both truth and prediction
is *dropped* from the macro average, so predicting nothing scores 0 when the class occurs and
removes the class from the average when it does not. With the classes of an episode treated
as independent, the expected macro-F1 of a decision is exact and cheap
(:func:`expected_macro_f1`): ``Σ_c E[F1_c] · E[1 / (1 + n_{-c})]`` over predicted classes,
with ``n_{-c}`` the (Poisson-binomial) number of other classes defined. Among k ≥ 1 the best
k of a class does not depend on the other classes' decisions (its term is the only one that
changes), so the decision reduces to which classes stay silent: all 2^C choices are compared
(coordinate ascent beyond :data:`EXHAUSTIVE_CLASSES` classes). The brute-force test in
``tests/test_expected_f1.py`` checks the result against every combination of per-class
thresholds on small problems.
"""

from __future__ import annotations

import numpy as np

EXHAUSTIVE_CLASSES = 12  # 2^12 decisions compared at most


def poisson_binomial_prefixes(p: np.ndarray) -> np.ndarray:
    """``out[..., k, a]`` = P(a positives among the first k items), k = 0..n, for independent
    Bernoulli probabilities ``p`` [..., n] (any leading dimensions: each row is its own problem,
    computed elementwise, so a row's result does not depend on the others)."""
    p = np.asarray(p, dtype=float)
    n = p.shape[-1]
    out = np.zeros((*p.shape[:-1], n + 1, n + 1))
    out[..., 0, 0] = 1.0
    for k in range(1, n + 1):
        pk = p[..., k - 1, None]
        out[..., k, :] = out[..., k - 1, :] * (1.0 - pk)
        out[..., k, 1:] += out[..., k - 1, :-1] * pk
    return out


def expected_f1_top_k(p_sorted: np.ndarray) -> np.ndarray:
    """Exact E[F1] of predicting the k most probable items, k = 0..n, for independent item
    probabilities sorted in descending order ([..., n] → [..., n + 1]). Entry 0 is
    E[F1 · 1{defined}] = 0: predicting nothing never scores; its dropped case is valued by
    :func:`expected_macro_f1`."""
    p = np.asarray(p_sorted, dtype=float)
    n = p.shape[-1]
    inside = poisson_binomial_prefixes(p)  # [..., k, a]: positives among the top k
    outside = poisson_binomial_prefixes(p[..., ::-1])[..., ::-1, :]  # [..., k, b]: positives among items k..n-1
    k = np.arange(n + 1)[:, None, None]
    a = np.arange(n + 1)[None, :, None]
    b = np.arange(n + 1)[None, None, :]
    denominator = k + a + b
    f1 = np.divide(2.0 * a, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return np.einsum("...ka,...kb,kab->...k", inside, outside, f1)


def _class_options(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every class (the last axis of ``p`` [..., Q, C]), over set sizes k = 1..Q: the
    expected F1 of its top-k set [..., C, Q], -inf where a threshold cannot select exactly k
    items (a tie across the cut); the threshold selecting each [..., C, Q]; and P(no positive)
    [..., C]."""
    order = np.ascontiguousarray(-np.sort(-np.swapaxes(p, -1, -2), axis=-1))  # [..., C, Q], descending
    values = expected_f1_top_k(order)[..., 1:]
    separable = np.concatenate([order[..., :-1] > order[..., 1:], np.ones_like(order[..., :1], dtype=bool)], -1)
    below = np.concatenate([order[..., 1:], np.full_like(order[..., :1], -np.inf)], -1)  # the largest left out
    thresholds = np.where(np.isfinite(below), (order + below) / 2.0, 0.0)
    return np.where(separable, values, -np.inf), thresholds, np.prod(1.0 - order, axis=-1)


def expected_macro_f1(silent: np.ndarray, gains: np.ndarray, p_none: np.ndarray) -> np.ndarray:
    """Expected macro-F1 [..., S] of decisions ``silent`` [S, C] (True = predict nothing for that
    class), given each class's expected F1 when predicted, ``gains`` [..., C], and its
    probability of having no positive, ``p_none`` [..., C]; classes independent. A class
    predicted is always defined; a silent class is defined (scoring 0) with probability
    ``1 - p_none``; an episode with no class defined scores 1 (the metric's convention)."""
    silent = np.atleast_2d(np.asarray(silent, dtype=bool))
    p_none = np.asarray(p_none, dtype=float)
    defined = np.where(silent, 1.0 - p_none[..., None, :], 1.0)  # [..., S, C]
    n_classes = silent.shape[1]
    out = np.where(silent.all(axis=1), np.prod(p_none, axis=-1)[..., None], 0.0)
    for c in range(n_classes):
        count = np.zeros(defined.shape)  # distribution of the other classes defined
        count[..., 0] = 1.0
        for j in range(n_classes):
            if j != c:
                shifted = np.zeros_like(count)
                shifted[..., 1:] = count[..., :-1]
                count = count * (1.0 - defined[..., j:j + 1]) + shifted * defined[..., j:j + 1]
        inverse = count @ (1.0 / np.arange(1, n_classes + 1))
        out = out + np.where(silent[:, c], 0.0, gains[..., c, None] * inverse)
    return out


def _silent_classes(gains: np.ndarray, p_none: np.ndarray) -> np.ndarray:
    """The best set of classes to leave unpredicted, [..., C] bool, for each row of ``gains``
    and ``p_none`` [..., C]."""
    n_classes = gains.shape[-1]
    if n_classes <= EXHAUSTIVE_CLASSES:
        codes = np.arange(2**n_classes)
        choices = (codes[:, None] >> np.arange(n_classes)[None, :]) & 1 == 1
        return choices[np.argmax(expected_macro_f1(choices, gains, p_none), axis=-1)]
    if gains.ndim > 1:
        return np.stack([_silent_classes(g, none) for g, none in zip(gains, p_none, strict=True)])
    silent = np.zeros(n_classes, dtype=bool)
    while True:
        flips = np.repeat(silent[None], n_classes, axis=0) ^ np.eye(n_classes, dtype=bool)
        values = expected_macro_f1(flips, gains, p_none)
        if values.max() <= expected_macro_f1(silent, gains, p_none)[0] + 1e-12:
            return silent
        silent = flips[int(np.argmax(values))]


def optimal_thresholds(proba: np.ndarray) -> np.ndarray:
    """Per-class thresholds [C] maximising the expected per-episode macro-F1 of query items
    whose labels are independent with probabilities ``proba`` [Q, C]; for episodes stacked as
    [..., Q, C], each episode's own thresholds [..., C] (every step is elementwise or per
    episode, so a stacked episode gets exactly the thresholds it gets alone, in one pass).

    Thresholds are chosen on the float32 values the runner scores (``proba >= threshold``),
    so each selects exactly the intended top-k set: midway between the last item in and the
    first item out, 0 when every item is in, one float32 step above the largest probability
    when the class is best left unpredicted."""
    p = np.asarray(np.asarray(proba, dtype=np.float32), dtype=float)
    if p.ndim < 2 or not p.shape[-2] or not p.shape[-1]:
        raise ValueError(f"proba must be [..., Q >= 1, C], got shape {p.shape}")
    values, thresholds, p_none = _class_options(p)
    best = np.argmax(values, axis=-1)[..., None]  # the first best size, as among the separable ones
    gains = np.take_along_axis(values, best, -1)[..., 0]
    chosen = np.take_along_axis(thresholds, best, -1)[..., 0]
    above = np.nextafter(p.max(axis=-2).astype(np.float32), np.float32(np.inf)).astype(float)
    return np.where(_silent_classes(gains, p_none), above, chosen)
