"""benchmarks/sealing_cost.py's "arithmetic alone" is the sealed run's work without isolation:
every episode the runner scores, in the runner's units, plus one audit unit per cell; its CPU
splits into meta-fitting and adaptation."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import synthetic_task_toml

from perserbench.runner import isolation_units, run
from perserbench.tasks import load_task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import sealing_cost


def test_arithmetic_alone_covers_the_sealed_runs_episodes_and_units(tmp_path):
    from perserbench.episodes import sample_episodes

    path = tmp_path / "sealing-cost.toml"
    path.write_text(synthetic_task_toml(name="sealing-cost", scenarios=("seen", "unseen"), shots=(1, 5)))
    task = load_task(path)
    alone = sealing_cost.arithmetic("consensus", task, [1, 5])
    cells = [sample_episodes(task, fold, scenario, k) for fold in task.folds for scenario in ("seen", "unseen")
             for k in (1, 5)]
    assert alone.meta_fit_s > 0 and alone.adapt_s > 0 and alone.seconds == alone.meta_fit_s + alone.adapt_s
    assert alone.units == sum(1 + len(isolation_units(episodes)) for episodes in cells if episodes)
    assert alone.predicted == len(run("consensus", task, [1, 5]).episodes) == sum(map(len, cells)) > 0
