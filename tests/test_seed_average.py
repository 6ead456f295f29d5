"""benchmarks/seed_average.py: gains and tests per seed and over the seeds' average."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_task_toml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from seed_average import episodes, seed_table


def _episodes(offset: dict[int, float]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"fold": 0, "listener": f"L{i}", "scenario": "seen", "shots": k, "episode": e, "seed": s,
             "macro_f1": 0.5 + offset[s] + 0.01 * rng.standard_normal()}
            for i in range(12) for k in (1, 5) for e in range(2) for s in offset]
    return pd.DataFrame(rows)


def test_each_seed_and_their_average_are_tested_over_listeners():
    baseline = _episodes({0: 0.0, 1: 0.0})
    method = baseline.assign(macro_f1=baseline.macro_f1 + np.where(baseline.seed == 0, 0.05, 0.01))
    table = seed_table(method, baseline, [0, 1])
    assert set(table.K) == {5}  # K = 1 is left out
    gains = dict(zip(table.seeds, table.gain))
    assert gains["seed 0"] == pytest.approx(0.05) and gains["seed 1"] == pytest.approx(0.01)
    assert gains["seeds averaged"] == pytest.approx(0.03)
    assert (table.p < 0.01).all()  # every listener gains: the smallest two-sided p for 12 listeners


def test_another_corpus_draw_is_run_and_kept_apart_from_the_tasks_own(tmp_path):
    """``--corpus-seed``: the draw changes the labels, so the run is another file in ``runs``
    (named by the split hash) with other scores, and asking again reuses that file."""
    path = tmp_path / "small.toml"
    path.write_text(synthetic_task_toml(options='{ seed = 0, generator = "prior-shift" }', scenarios=("unseen",),
                                        shots=(5,), query=10, episodes=1, episode_seed=11))
    runs = tmp_path / "runs"
    runs.mkdir()
    own = episodes("consensus", str(path), [0], runs)
    other = episodes("consensus", str(path), [0], runs, corpus_seed=3)
    assert len(list(runs.iterdir())) == 2
    assert not np.allclose(own.macro_f1.to_numpy()[:3], other.macro_f1.to_numpy()[:3])
    written = {f: f.stat().st_mtime_ns for f in runs.iterdir()}
    again = episodes("consensus", str(path), [0], runs, corpus_seed=3)
    assert {f: f.stat().st_mtime_ns for f in runs.iterdir()} == written
    pd.testing.assert_frame_equal(again, other)
