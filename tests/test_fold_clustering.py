"""benchmarks/fold_clustering.py: the ICC it reports, and that its null separates clustered
gains from independent ones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from fold_clustering import clustering, draw_level_tests, icc1


def test_icc1_by_hand():
    folds = np.array([0, 0, 1, 1])
    assert icc1(np.array([1.0, 1.0, 3.0, 3.0]), folds) == pytest.approx(1.0)  # alike within folds only
    assert icc1(np.array([1.0, 3.0, 1.0, 3.0]), folds) == pytest.approx(-1.0)  # alike across folds only
    draws = np.random.default_rng(0).normal(size=(5, 7))
    groups = np.array([0, 0, 0, 1, 1, 2, 2])
    assert np.allclose(icc1(draws, groups), [icc1(row, groups) for row in draws])


def _gains(fold_effect: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for cell in range(12):
        offsets = rng.normal(scale=fold_effect, size=4)
        rows += [{"method": "m", "task": "t", "scenario": "seen", "shots": cell, "fold": f, "listener": f"L{f}{i}",
                  "gain": offsets[f] + rng.normal(scale=0.02)} for f in range(4) for i in range(4)]
    return pd.DataFrame(rows)


def test_the_null_tells_clustered_gains_from_independent_ones():
    clustered = clustering(_gains(0.04, seed=1), permutations=500).iloc[0]
    independent = clustering(_gains(0.0, seed=1), permutations=500).iloc[0]
    assert clustered["mean ICC"] > 0.5 and clustered["p"] < 0.01
    assert abs(independent["mean ICC"]) < 0.15 and independent["p"] > 0.05


def test_by_draw_the_groups_are_draws_and_a_one_draw_method_is_left_out():
    gains = _gains(0.04, seed=2).rename(columns={"fold": "draw"})
    one_draw = gains.assign(method="only-one-draw", draw=0)
    table = clustering(pd.concat([gains, one_draw]), permutations=200, by="draw")
    assert list(table.method) == ["m"] and table.iloc[0]["mean ICC"] > 0.5


def test_draw_level_test_is_a_t_test_of_the_draws_means():
    from scipy import stats

    gains = _gains(0.0, seed=3).rename(columns={"fold": "draw"})
    gains["gain"] += 0.01 * gains["draw"]
    tests = draw_level_tests(gains, "m")
    assert len(tests) == 12 and set(tests.draws) == {4}
    first = gains[(gains.shots == 0)].groupby("draw").gain.mean().to_numpy()
    assert tests.iloc[0]["mean"] == pytest.approx(first.mean())
    assert tests.iloc[0]["p"] == pytest.approx(stats.ttest_1samp(first, 0.0).pvalue)
