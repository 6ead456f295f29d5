"""Statistics over per-listener results.

Listeners are the unit of personalization, so every interval and test treats the listener as
the independent sample; episodes are repeated measurements within a listener. Everything a
library provides (tests, distributions) comes from ``scipy.stats``; the hierarchical
bootstrap is written here because scipy's ``bootstrap`` resamples one level only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def hierarchical_bootstrap(
    per_listener: Sequence[np.ndarray],
    n_resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap distribution of the mean over listeners of per-listener mean scores.

    Two-level resampling: draw listeners with replacement, then, within each drawn listener,
    draw that listener's episode scores with replacement. ``per_listener[i]`` holds listener
    ``i``'s episode scores (any length >= 1): ``[size]``, or ``[size, M]`` for M scores per
    episode (several metrics) resampled together. Returns ``n_resamples`` resampled means
    (``[n_resamples, M]`` for M columns). Deterministic for a given ``seed``; each column's
    distribution is exactly what a call with that column alone gives (the same listeners and
    episodes are drawn), so a caller with several metrics draws the indices once.
    """
    groups = [np.asarray(g, dtype=float) for g in per_listener]
    if not groups or any(g.shape[0] == 0 for g in groups):
        raise ValueError("hierarchical_bootstrap needs at least one listener, each with >= 1 score")
    columns = [g.reshape(g.shape[0], -1) for g in groups]
    if len({c.shape[1] for c in columns}) != 1:
        raise ValueError("hierarchical_bootstrap: every listener needs the same number of score columns")
    rng = np.random.default_rng(seed)
    n = len(groups)
    sizes = np.array([c.shape[0] for c in columns])
    width = int(sizes.max())
    # Pad to a rectangle per column so the episode level is one vectorised draw per listener slot.
    table = np.zeros((columns[0].shape[1], n, width))
    for i, c in enumerate(columns):
        table[:, i, : c.shape[0]] = c.T
    picks = rng.integers(0, n, size=(n_resamples, n))  # listener level
    slot_sizes = sizes[picks]  # [B, n]
    episode_idx = (rng.random((n_resamples, n, width)) * slot_sizes[..., None]).astype(np.int64)
    valid = np.arange(width)[None, None, :] < slot_sizes[..., None] if sizes.min() < width else None
    out = np.empty((n_resamples, len(table)))
    for m, scores in enumerate(table):
        values = scores[picks[..., None], episode_idx]  # [B, n, width]
        if valid is not None:  # padded slots of shorter listeners count for nothing
            values = np.where(valid, values, 0.0)
        out[:, m] = (values.sum(-1) / slot_sizes).mean(axis=1)
    return out[:, 0] if groups[0].ndim == 1 else out


def hierarchical_bootstrap_ci(
    per_listener: Sequence[np.ndarray],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean of listener means, CI low, CI high) with a percentile hierarchical-bootstrap CI."""
    return hierarchical_bootstrap_cis([np.asarray(g, dtype=float)[:, None] for g in per_listener],
                                      confidence, n_resamples, seed)[0]


def hierarchical_bootstrap_cis(
    per_listener: Sequence[np.ndarray],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[tuple[float, float, float]]:
    """:func:`hierarchical_bootstrap_ci` of each column of ``per_listener[i]`` (``[size, M]``),
    from one draw of listeners and episodes (what M calls with one seed would each draw)."""
    groups = [np.asarray(g, dtype=float) for g in per_listener]
    width = groups[0].shape[1] if groups else 0
    # Column by column on contiguous copies: numpy sums a contiguous row in another order than
    # a strided column, and a CI must not depend on how many metrics were asked for at once.
    points = [float(np.array([np.mean(np.ascontiguousarray(g[:, m])) for g in groups]).mean()) for m in range(width)]
    if len(groups) == 1 and groups[0].shape[0] == 1:
        return [(p, p, p) for p in points]
    dist = hierarchical_bootstrap(groups, n_resamples=n_resamples, seed=seed)
    alpha = (1.0 - confidence) / 2.0
    out = []
    for m, point in enumerate(points):
        low, high = np.quantile(np.ascontiguousarray(dist[:, m]), [alpha, 1.0 - alpha])
        out.append((point, float(low), float(high)))
    return out


# --------------------------------------------------------------------------- two methods, paired


@dataclass(frozen=True)
class PairedTest:
    """Wilcoxon signed-rank test of paired scores ``a`` vs ``b`` (one pair per listener).

    ``statistic`` is scipy's W (the smaller of the signed-rank sums for a two-sided test);
    ``effect_size`` is the matched-pairs rank-biserial correlation (T+ − T−)/(T+ + T−) over the
    non-zero differences: +1 when every listener gains with ``a``, −1 when every one loses.
    """

    statistic: float
    p_value: float
    n: int
    n_nonzero: int
    mean_diff: float
    effect_size: float
    test: str = "wilcoxon"


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired differences (Kerby 2014).

    scipy.stats has no function for it; it is one line on top of ``rankdata``. Zero
    differences are dropped, as in the default Wilcoxon ``zero_method``; all-zero → 0.
    """
    d = np.asarray(diff, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def _paired_arrays(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired scores must be two 1-d arrays of equal length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired scores are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores contain NaN or inf")
    return a, b


def paired_test(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """The primary paired test over listeners: two-sided Wilcoxon signed-rank (scipy).

    Why Wilcoxon: per-listener score differences are bounded and often skewed, and there are
    few listeners (tens), so a rank test is safer than a t-test. scipy picks the exact null
    distribution for small samples without ties and the normal approximation otherwise.
    When every difference is zero there is no evidence of a difference at all: p = 1
    (scipy would raise).
    """
    a, b = _paired_arrays(a, b)
    diff = a - b
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        statistic, p_value = 0.0, 1.0
    else:
        res = stats.wilcoxon(a, b, alternative="two-sided")
        statistic, p_value = float(res.statistic), float(res.pvalue)
    return PairedTest(statistic, p_value, int(a.size), nonzero, float(diff.mean()), rank_biserial(diff))


def permutation_p_value(a: np.ndarray, b: np.ndarray, n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided paired sign-flip permutation test of the mean difference over listeners.

    ``scipy.stats.permutation_test`` with ``permutation_type='samples'`` swaps a and b within
    each pair, i.e. flips the sign of each listener's difference; it enumerates all 2^n
    flips exactly when 2^n <= ``n_resamples`` and samples them (seeded) otherwise.
    """
    a, b = _paired_arrays(a, b)
    if not np.any(a != b):
        return 1.0
    res = stats.permutation_test(
        (a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
        alternative="two-sided", n_resamples=n_resamples, vectorized=True, rng=np.random.default_rng(seed),
    )
    return float(min(1.0, res.pvalue))


@dataclass(frozen=True)
class PairComparison:
    """Everything the report says about method A vs method B on one set of listeners."""

    a: str
    b: str
    n_listeners: int
    mean_a: float
    mean_b: float
    mean_diff: float  # mean over listeners of (A − B)
    ci_low: float
    ci_high: float
    wilcoxon_statistic: float
    p_value: float  # Wilcoxon signed-rank, two-sided (the primary test)
    permutation_p: float  # paired sign-flip permutation test, two-sided
    effect_size: float  # matched-pairs rank-biserial correlation
    p_holm: float = float("nan")  # filled in by the caller over its family of pairs

    def with_holm(self, p: float) -> PairComparison:
        return dataclasses.replace(self, p_holm=float(p))


def compare_pair(
    a_episodes: Sequence[np.ndarray],
    b_episodes: Sequence[np.ndarray],
    names: tuple[str, str] = ("A", "B"),
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairComparison:
    """Compare two methods paired over listeners (and over episodes within a listener).

    ``a_episodes[i]`` and ``b_episodes[i]`` hold listener ``i``'s episode scores under A and B,
    in the same episode order (every method sees exactly the same episodes). The tests run on
    per-listener means; the CI of the mean difference is the hierarchical bootstrap of the
    per-episode differences, which resamples listeners and then episode indices *jointly* for
    A and B (the pairing is kept at both levels).
    """
    if len(a_episodes) != len(b_episodes) or not a_episodes:
        raise ValueError("compare_pair needs the same, non-zero number of listeners for both methods")
    diffs = []
    for i, (x, y) in enumerate(zip(a_episodes, b_episodes)):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if x.shape != y.shape or x.ndim != 1 or x.size == 0:
            raise ValueError(f"listener {i}: episode scores are not paired ({x.shape} vs {y.shape})")
        diffs.append(x - y)
    mean_a = np.array([np.mean(x) for x in a_episodes], dtype=float)
    mean_b = np.array([np.mean(y) for y in b_episodes], dtype=float)
    test = paired_test(mean_a, mean_b)
    point, low, high = hierarchical_bootstrap_ci(diffs, confidence, n_resamples, seed)
    return PairComparison(
        names[0], names[1], len(mean_a), float(mean_a.mean()), float(mean_b.mean()), point, low, high,
        test.statistic, test.p_value, permutation_p_value(mean_a, mean_b, seed=seed), test.effect_size,
    )


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (same order as the input).

    Written here because scipy.stats only offers Benjamini–Hochberg/Yekutieli
    (``false_discovery_control``) and statsmodels is not a dependency for five lines: sort
    ascending, multiply the i-th smallest by (m − i), take the running maximum, cap at 1.
    NaN p-values (tests that could not run) stay NaN and do not count towards m.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError("holm expects a 1-d sequence of p-values")
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    if finite.size == 0:
        return out
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


# --------------------------------------------------------------------------- many methods, many blocks


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman test, Iman–Davenport F and Nemenyi critical difference (Demšar 2006, §3.2.2).

    ``avg_ranks[j]`` is method j's mean rank over blocks, rank 1 = best. ``groups`` are the
    maximal sets of methods (indices, best first) whose average ranks differ by less than
    the critical difference: the bars of the CD diagram.
    """

    methods: list[str]
    n_blocks: int
    avg_ranks: list[float]
    chi2: float
    p_value: float
    iman_davenport: float
    iman_davenport_p: float
    df1: int
    df2: int
    alpha: float
    q_alpha: float
    cd: float
    groups: list[list[int]]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def friedman_from_ranks(avg_ranks: Sequence[float], n_blocks: int) -> tuple[float, float]:
    """(χ²_F, F_F) from average ranks, Demšar (2006) eqs. for the Friedman statistic and the
    Iman–Davenport correction. scipy's ``friedmanchisquare`` needs the raw scores; this form
    is what papers print and what reproduces the published worked example.
    """
    r = np.asarray(avg_ranks, dtype=float)
    k, n = r.size, int(n_blocks)
    chi2 = 12.0 * n / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4.0)
    return float(chi2), iman_davenport(chi2, n, k)


def iman_davenport(chi2: float, n_blocks: int, k: int) -> float:
    """F_F = (N−1)χ²_F / (N(k−1) − χ²_F), F-distributed with (k−1, (k−1)(N−1)) degrees of freedom."""
    denom = n_blocks * (k - 1) - chi2
    return float("inf") if denom <= 0 else float((n_blocks - 1) * chi2 / denom)


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Nemenyi's q_α: the studentized range quantile with infinite df, divided by √2."""
    return float(stats.studentized_range.ppf(1.0 - alpha, k, np.inf) / np.sqrt(2.0))


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Critical difference of average ranks: q_α √(k(k+1) / (6N))."""
    return nemenyi_q(k, alpha) * float(np.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def average_ranks(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Mean over blocks (rows) of each method's (column's) rank, 1 = best, ties share the mean rank."""
    s = np.asarray(scores, dtype=float)
    ranks = stats.rankdata(-s if higher_is_better else s, axis=1)
    return ranks.mean(axis=0)


def nemenyi_groups(avg_ranks: Sequence[float], cd: float) -> list[list[int]]:
    """Maximal runs of methods (sorted by rank) spanning less than ``cd``: not significantly
    different from each other by the Nemenyi test. Runs contained in another are dropped."""
    r = np.asarray(avg_ranks, dtype=float)
    order = list(np.argsort(r, kind="stable"))
    runs: list[list[int]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and r[order[j + 1]] - r[order[i]] < cd:
            j += 1
        if j > i and not (runs and order.index(runs[-1][-1]) >= j):
            runs.append([int(x) for x in order[i : j + 1]])
    return runs


def friedman(
    scores: np.ndarray, methods: Sequence[str], alpha: float = 0.05, higher_is_better: bool = True
) -> FriedmanResult:
    """Friedman + Iman–Davenport + Nemenyi on a [blocks, methods] score table.

    χ²_F and its p-value come from ``scipy.stats.friedmanchisquare`` (which corrects for tied
    ranks; without ties it equals :func:`friedman_from_ranks`); F_F's p-value from
    ``scipy.stats.f``; ranks from ``scipy.stats.rankdata``.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2:
        raise ValueError(f"scores must be a [blocks, methods] table, got shape {s.shape}")
    n, k = s.shape
    if k != len(methods):
        raise ValueError(f"{k} score columns but {len(methods)} method names")
    if k < 3:
        raise ValueError(f"the Friedman test needs at least 3 methods, got {k}")
    if n < 2:
        raise ValueError(f"the Friedman test needs at least 2 blocks, got {n}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    ranks = average_ranks(s, higher_is_better)
    oriented = s if higher_is_better else -s
    if np.all(oriented == oriented[:, :1]):  # every block all-tied: no information, scipy divides by 0
        chi2, p = 0.0, 1.0
    else:
        res = stats.friedmanchisquare(*oriented.T)
        chi2, p = float(res.statistic), float(res.pvalue)
    df1, df2 = k - 1, (k - 1) * (n - 1)
    f_f = iman_davenport(chi2, n, k)
    f_p = 0.0 if np.isinf(f_f) else float(stats.f.sf(f_f, df1, df2))
    q = nemenyi_q(k, alpha)
    cd = q * float(np.sqrt(k * (k + 1) / (6.0 * n)))
    return FriedmanResult(list(methods), n, [float(x) for x in ranks], chi2, p, f_f, f_p, df1, df2, alpha, q, cd,
                          nemenyi_groups(ranks, cd))


@dataclass(frozen=True)
class EquivalenceTest:
    """Two one-sided tests (TOST) of a paired mean difference against ``±margin``.

    ``equivalent`` means the difference is shown to lie inside the margin (both one-sided
    p-values below alpha, i.e. the (1 − 2α) CI lies inside ``(−margin, margin)``): a positive
    finding, unlike "not significantly different", which a small or noisy sample always gives.
    ``power`` is the probability of showing equivalence at this sample size and spread if the
    true difference were 0 (normal approximation), so a verdict can be read with its power."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    margin: float
    alpha: float
    p_value: float
    equivalent: bool
    power: float

    @property
    def harmful(self) -> bool:
        """Shown to be worse than ``−margin`` (the upper CI bound is below it)."""
        return self.ci_high < -self.margin

    @property
    def verdict(self) -> str:
        """The do-no-harm verdict (:data:`NO_HARM_VERDICTS`) read off the same (1 − 2α) CI:

        * ``"no harm"``: equivalent within ``±margin``, or significantly better (CI above 0);
        * ``"harmful"``: significantly worse (CI below 0) and not shown equivalent;
        * ``"inconclusive"``: neither; read it with :attr:`power` (low power = too few
          listeners or too noisy to tell, not evidence of safety).

        Why 0 and not ``−margin`` for "worse": a method that is reliably below consensus by
        more than the data can call negligible has not done no harm; :attr:`harmful` (beyond
        the margin) is the stronger statement."""
        if self.equivalent or self.ci_low > 0:
            return "no harm"
        if self.ci_high < 0:
            return "harmful"
        return "inconclusive"


NO_HARM_MARGIN = 0.01  # macro-F1 points: a difference from consensus this small is negligible
NO_HARM_VERDICTS = ("no harm", "harmful", "inconclusive")


def no_harm_test(per_listener_diffs: Sequence[Mapping[Hashable, float]], margin: float = NO_HARM_MARGIN,
                 alpha: float = 0.05) -> EquivalenceTest | None:
    """The do-no-harm TOST of a method against consensus over listeners.

    ``per_listener_diffs`` holds one mapping listener → (method − consensus) per cell; a
    listener's difference is its mean over the cells (one cell: the cell's verdict; all cells
    of a task: the task's verdict, the cells sharing their listeners so they are averaged, not
    treated as independent samples). Listeners missing from any cell are left out. None
    when fewer than 2 listeners remain (no test can run)."""
    if not per_listener_diffs:
        return None
    common = set(per_listener_diffs[0]).intersection(*per_listener_diffs[1:])
    if len(common) < 2:
        return None
    keys = sorted(common, key=str)
    d = np.array([np.mean([cell[k] for cell in per_listener_diffs]) for k in keys])
    return equivalence_test(d, margin, alpha)


def equivalence_test(diff: Sequence[float], margin: float, alpha: float = 0.05) -> EquivalenceTest:
    """TOST on paired differences (e.g. per-listener macro-F1, method − consensus), with
    scipy's one-sample t-tests against ``−margin`` (greater) and ``+margin`` (less)."""
    d = np.asarray(diff, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError("equivalence_test needs at least 2 paired differences")
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    n, mean = len(d), float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n))
    if se == 0.0:
        inside = abs(mean) < margin
        return EquivalenceTest(n, mean, mean, mean, margin, alpha, 0.0 if inside else 1.0, inside, 1.0)
    p_low = float(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
    p_high = float(stats.ttest_1samp(d, margin, alternative="less").pvalue)
    half = float(stats.t.ppf(1 - alpha, n - 1)) * se
    power = max(0.0, 2 * float(stats.norm.cdf(margin / se - stats.norm.ppf(1 - alpha))) - 1)
    p_value = max(p_low, p_high)
    return EquivalenceTest(n, mean, mean - half, mean + half, margin, alpha, p_value, p_value < alpha, power)
