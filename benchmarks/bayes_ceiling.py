"""How much of the oracle's headroom can K labels reveal at all? The K-shot ceiling (issue 14).

The ``oracle`` knows the listener. ``bayes-oracle`` knows everything but the listener (the
generator, its population, the utterances' true evidence) and infers the listener from the K
support labels by Bayes' rule (:mod:`perserbench.methods.bayes_oracle`). On each board task's
episodes (the runner's own sampler and method seeds) this script prints per scenario:

* ``consensus``, ``calibrate`` and ``oracle`` from the committed board files;
* ``bayes K=0``: the posterior is the prior (the population's average listener, exact evidence):
  the best a method can do *without* personalizing;
* ``bayes K``: the K-shot ceiling, with the Monte-Carlo posterior's median effective sample size;
* headroom shares: ``calibrate`` and ``bayes K`` against the oracle's headroom over consensus,
  and ``calibrate``'s share of the K-shot ceiling's gain.

It runs in one process and tunes nothing; its ``bayes K`` rows equal sealed runs of
``perserbench run --method bayes-oracle`` (``tests/test_bayes_oracle.py``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bayes_ceiling.py synthetic-prior-shift
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from perserbench.episodes import MetaTrainSet, episode_items, sample_episodes, split_hash
from perserbench.expected_f1 import optimal_thresholds
from perserbench.methods.bayes_oracle import BayesOracle, effective_sample_size
from perserbench.metrics import episode_metrics
from perserbench.registry import create_method
from perserbench.results import find_result_files, load_result
from perserbench.runner import _derived_seed
from perserbench.tasks import ResolvedTask, load_task

BOARD = Path(__file__).resolve().parents[1] / "leaderboard" / "results"
BOARD_ROWS = ("consensus", "calibrate", "oracle")


def bayes_ceiling(task: ResolvedTask, shots: list[int], population: int | None = None) -> dict[tuple[str, int], dict[str, float]]:
    """Per (scenario, K): mean macro-F1 of ``bayes-oracle`` at K (``"bayes"``) and with no
    support (``"prior"``, on the same queries), and the median effective sample size ``"ess"``."""
    cells: dict[tuple[str, int], dict[str, list[float]]] = {}
    for fold in task.folds:
        method = create_method("bayes-oracle", {} if population is None else {"population": str(population)},
                               seed=_derived_seed(0, fold.index))
        assert isinstance(method, BayesOracle)
        method.meta_fit(MetaTrainSet(task, fold))
        for scenario in task.spec.episodes.scenarios:
            for k in shots:
                cell = cells.setdefault((scenario, k), {"bayes": [], "prior": [], "ess": []})
                for episode in sample_episodes(task, fold, scenario, k):
                    labels = episode_items(task, episode)[2]
                    weight = method.posterior(task, episode)
                    for row, w in (("bayes", weight), ("prior", np.full(len(weight), 1.0 / len(weight)))):
                        proba = method.predictive(task, episode, w)
                        cell[row].append(episode_metrics(proba, labels, optimal_thresholds(proba))["macro_f1"])
                    cell["ess"].append(effective_sample_size(weight))
    return {key: {"bayes": float(np.mean(v["bayes"])), "prior": float(np.mean(v["prior"])),
                  "ess": float(np.median(v["ess"]))} for key, v in cells.items()}


def board_means(task: ResolvedTask, board: Path = BOARD) -> dict[str, dict[tuple[str, int], float]]:
    """Mean macro-F1 per (scenario, K) of the :data:`BOARD_ROWS` methods' committed own-support
    results on ``task`` (the same split hash: results are only compared on equal hashes)."""
    out: dict[str, dict[tuple[str, int], float]] = {}
    task_hash = split_hash(task)
    for path in find_result_files([board]):
        result = load_result(path)
        if (result.method["name"] in BOARD_ROWS and result.task["hash"] == task_hash
                and result.method.get("control", "own") == "own"):
            out[result.method["name"]] = {(r.scenario, r.shots): r.mean for r in result.summary
                                          if r.metric == "macro_f1"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--population", type=int, help="population listeners (default: the method's)")
    args = parser.parse_args()
    task = load_task(args.task)
    shots = list(task.spec.episodes.shots)
    ceiling = bayes_ceiling(task, shots, args.population)
    board = board_means(task)
    print(f"{task.spec.name}: mean macro-F1 per cell ({len(task.folds)} folds, seed 0); board rows from {BOARD}")
    print(f"{'cell':10s} {'cons':>6s} {'bayes0':>6s} {'calib':>6s} {'bayesK':>6s} {'oracle':>6s} {'ESS':>6s} "
          f"{'calib/orc':>9s} {'bayes/orc':>9s} {'calib/bayes':>11s}")
    for (scenario, k), row in ceiling.items():
        cons, cal, orc = (board.get(name, {}).get((scenario, k), float("nan")) for name in BOARD_ROWS)
        gap = orc - cons
        print(f"{scenario[0]}{k:<9d} {cons:6.3f} {row['prior']:6.3f} {cal:6.3f} {row['bayes']:6.3f} {orc:6.3f} "
              f"{row['ess']:6.0f} {(cal - cons) / gap:9.0%} {(row['bayes'] - cons) / gap:9.0%} "
              f"{(cal - cons) / (row['bayes'] - cons):11.0%}")


if __name__ == "__main__":
    main()
