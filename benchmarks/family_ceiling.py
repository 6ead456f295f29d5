"""How much of the headroom can ``calibrate``'s model family reach at all? (issue 14)

``calibrate`` personalizes with a listener transform of the consensus logits (class mixing
and biases). Its K = 20 score sits well under the oracle on some generators; this script
separates the two reasons that can have: too few support items for the transform, or a
transform family that cannot express the listener even when its parameters are known well.
For every K = 20 episode of every fold it scores, on the episode's query (:data:`ROWS`):

* ``consensus`` (the consensus model at 0.5, as on the board);
* ``calibrate K`` (the method as it runs, on the episode's 20 support items);
* ``calibrate all`` (the same method, its support replaced by *all* of the listener's labels
  in the scenario's pool outside the query: ~440 seen, ~90 unseen; the family's ceiling at
  calibrate's own decision rule);
* ``oracle`` (true probabilities, expected-F1-optimal decisions, as on the board).

It runs in one process, unsealed: a diagnostic, not a board result, and it tunes nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/family_ceiling.py synthetic-dev-prior-shift
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from perserbench.episodes import LabelledItems, MetaTrainSet, episode_items, sample_episodes
from perserbench.expected_f1 import optimal_thresholds
from perserbench.featurerows import gather
from perserbench.metrics import episode_metrics
from perserbench.registry import create_method
from perserbench.runner import _derived_seed
from perserbench.tasks import ResolvedTask, load_task

SHOTS = 20
ROWS = ("consensus", "calibrate K", "calibrate all", "oracle")


def family_ceiling(task: ResolvedTask, shots: int = SHOTS) -> dict[str, dict[str, float]]:
    """Mean macro-F1 per scenario of each row of :data:`ROWS` over the K = ``shots`` episodes
    of every fold, calibrate at its defaults with the method seed a board run gives the fold."""
    ann, truth = task.corpus.annotations, task.corpus.truth
    scores: dict[str, dict[str, list[float]]] = {}
    for fold in task.folds:
        seed = _derived_seed(0, fold.index)
        method = create_method("calibrate", seed=seed)
        torch.manual_seed(seed)
        method.meta_fit(MetaTrainSet(task, fold))
        for scenario in task.spec.episodes.scenarios:
            episodes = sample_episodes(task, fold, scenario, shots)
            items = [episode_items(task, ep) for ep in episodes]
            own = method.adapt_many([support for support, _, _ in items])
            pools = []
            for ep in episodes:
                rows = np.setdiff1d(task.listener_rows(ep.listener, scenario), ep.query)
                pools.append(LabelledItems(gather(task.features, ann.utterance[rows]),
                                           torch.from_numpy(ann.labels[rows].astype(np.float32))))
            every = method.adapt_many(pools)
            for ep, (_, query, labels), few, many in zip(episodes, items, own, every, strict=True):
                oracle = truth.listener_proba(ep.listener, ann.utterance[ep.query]).astype(np.float32)
                with torch.no_grad():
                    decided = {"consensus": (torch.sigmoid(method.head_(query.x)).numpy(), None),
                               "calibrate K": (few.predict_proba(query).numpy(), None),
                               "calibrate all": (many.predict_proba(query).numpy(), None),
                               "oracle": (oracle, optimal_thresholds(oracle))}
                for name, (proba, thresholds) in decided.items():
                    scores.setdefault(scenario, {}).setdefault(name, []).append(
                        episode_metrics(proba, labels, thresholds)["macro_f1"])
    return {scenario: {name: float(np.mean(v)) for name, v in rows.items()} for scenario, rows in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--shots", type=int, default=SHOTS)
    args = parser.parse_args()
    task = load_task(args.task)
    print(f"{task.spec.name}: mean macro-F1 over the K={args.shots} episodes of every fold")
    for scenario, mean in family_ceiling(task, args.shots).items():
        gap = mean["oracle"] - mean["consensus"]
        print(f"  {scenario:6s} " + "  ".join(f"{name} {mean[name]:.3f}" for name in ROWS)
              + f"  | headroom captured: K={args.shots} {(mean['calibrate K'] - mean['consensus']) / gap:.0%}, "
              f"all {(mean['calibrate all'] - mean['consensus']) / gap:.0%}")


if __name__ == "__main__":
    main()
