"""How much of the headroom can ``calibrate``'s model family reach at all? (issue 14)

``calibrate`` personalizes with a listener transform of the consensus logits (class mixing
and biases). Its K = 20 score sits well under the oracle on some generators; this script
separates the two reasons that can have: too few support items for the transform, or a
transform family that cannot express the listener even when its parameters are known well.
For every K = 20 episode of every fold it scores, on the episode's query (:data:`ROWS`):

* ``consensus`` (the consensus model at 0.5, as on the board);
* ``calibrate K`` (the method's transform as it runs, on the episode's 20 support items; the
  annotator model ``calibrate`` pools it with since it has one is left out,
  ``annotator_weight = 0``, because the family of the transform is the question);
* ``calibrate all`` (the same method, its support replaced by *all* of the listener's labels
  in the scenario's pool outside the query: ~440 seen, ~90 unseen; the family's ceiling at
  calibrate's own decision rule);
* ``calibrate K exact`` (the method on the same 20 support items, prior and decision rule,
  but on exact evidence: its base logits are the generator population's average listener's
  class marginals, :func:`population_logits`, instead of the consensus model's, which reads
  the evidence only through noisy features; what the same transform and prior make of K
  labels when the base model is perfect);
* ``calibrate all exact`` (both: all of the listener's labels, on exact evidence);
* ``oracle`` (true probabilities, expected-F1-optimal decisions, as on the board).

It runs in one process, unsealed: a diagnostic, not a board result, and it tunes nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/family_ceiling.py synthetic-dev-prior-shift

``--corpus-seed S`` (repeatable) redraws the task's corpus with seed ``S`` (other listeners,
other utterances, the same generator and protocol) and prints one block per draw, then the
spread of the headroom shares over the draws: how much of a board figure is the particular
16 listeners the board's one draw holds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/family_ceiling.py synthetic-prior-shift \
        --corpus-seed 2 --corpus-seed 3 --corpus-seed 4 --corpus-seed 5
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from perserbench.data.synthetic.perception import marginal
from perserbench.episodes import (
    LabelledItems,
    MetaTrainSet,
    episode_items,
    meta_train_rows,
    sample_episodes,
)
from perserbench.expected_f1 import optimal_thresholds
from perserbench.featurerows import gather
from perserbench.metalearn import pad_supports
from perserbench.methods.bayes_oracle import MEMBERS_PER_CHUNK
from perserbench.methods.oracle import ground_truth
from perserbench.metrics import episode_metrics
from perserbench.registry import create_method
from perserbench.runner import _derived_seed
from perserbench.tasks import ResolvedTask, load_task

SHOTS = 20
ROWS = ("consensus", "calibrate K", "calibrate all", "calibrate K exact", "calibrate all exact", "oracle")
POPULATION = 2000  # population listeners averaged for the exact base logits
# The transform family is what this measures: calibrate without its annotator-model pool.
TRANSFORM_ONLY = {"annotator_weight": "0"}


def population_logits(task: ResolvedTask, population: int = POPULATION) -> torch.Tensor:
    """Logits of the class marginals of the generator's average listener for every utterance
    [utterances, C]: ``population`` listeners drawn as ``bayes-oracle`` draws them (seed 0),
    their marginals averaged. The base a consensus model would have if the features carried
    the evidence exactly."""
    truth = ground_truth(task, "family_ceiling.py")
    members = truth.draw_population(np.random.default_rng(0), population)
    utterances = np.arange(len(task.corpus.utterances))
    total = np.zeros((len(utterances), len(task.corpus.vocabulary)))
    for chunk in np.array_split(np.arange(population), -(-population // MEMBERS_PER_CHUNK)):
        pi, q = members.every_listener_proba(utterances, chunk)
        total += marginal(pi, q).sum(axis=0)
    return torch.logit(torch.from_numpy(total / population), eps=1e-6)


def row_items(task: ResolvedTask, rows: np.ndarray,
              x_of: Callable[[np.ndarray], torch.Tensor]) -> LabelledItems:
    """Annotation ``rows`` as one listener's labelled items, ``x_of`` giving the inputs of their
    utterances: the task's features for the method as it runs, exact base logits for the
    ``exact`` rows (padded by :func:`~perserbench.metalearn.pad_supports` into what
    ``adapt_logits`` takes)."""
    ann = task.corpus.annotations
    return LabelledItems(x_of(ann.utterance[rows]), torch.from_numpy(ann.labels[rows].astype(np.float32)))


def family_ceiling(task: ResolvedTask, shots: int = SHOTS) -> dict[str, dict[str, float]]:
    """Mean macro-F1 per scenario of each row of :data:`ROWS` over the K = ``shots`` episodes
    of every fold, calibrate at its defaults with the method seed a board run gives the fold."""
    ann, truth = task.corpus.annotations, task.corpus.truth
    exact_logits = population_logits(task)

    def features(utterances: np.ndarray) -> torch.Tensor:
        return gather(task.features, utterances)

    def exact_of(utterances: np.ndarray) -> torch.Tensor:
        return exact_logits[utterances]

    scores: dict[str, dict[str, list[float]]] = {}
    for fold in task.folds:
        seed = _derived_seed(0, fold.index)
        method = create_method("calibrate", TRANSFORM_ONLY, seed=seed)
        torch.manual_seed(seed)
        train = MetaTrainSet(task, fold)
        method.meta_fit(train)
        exact = create_method("calibrate", TRANSFORM_ONLY, seed=seed)
        # The meta-train utterances in MetaTrainSet's order (it keeps no utterance ids).
        exact.fit_prior(train, exact_logits[np.unique(ann.utterance[meta_train_rows(task, fold)])])
        exact.head_ = None  # no consensus model: its predictors are only given exact logits
        for scenario in task.spec.episodes.scenarios:
            episodes = sample_episodes(task, fold, scenario, shots)
            items = [episode_items(task, ep) for ep in episodes]
            own = method.adapt_many([support for support, _, _ in items])
            pool_rows = [np.setdiff1d(task.listener_rows(ep.listener, scenario), ep.query) for ep in episodes]
            every = method.adapt_many([row_items(task, rows, features) for rows in pool_rows])
            exact_own = exact.adapt_logits(*pad_supports([row_items(task, ep.support, exact_of) for ep in episodes]))
            exact_every = exact.adapt_logits(*pad_supports([row_items(task, rows, exact_of) for rows in pool_rows]))
            for ep, (_, query, labels), few, many, perfect, perfect_many in zip(
                    episodes, items, own, every, exact_own, exact_every, strict=True):
                oracle = truth.listener_proba(ep.listener, ann.utterance[ep.query]).astype(np.float32)
                query_logits = exact_of(ann.utterance[ep.query])
                with torch.no_grad():
                    decided = {"consensus": (torch.sigmoid(method.head_(query.x)).numpy(), None),
                               "calibrate K": (few.predict_proba(query).numpy(), None),
                               "calibrate all": (many.predict_proba(query).numpy(), None),
                               "calibrate K exact": (perfect.proba_from_logits(query_logits).numpy(), None),
                               "calibrate all exact": (perfect_many.proba_from_logits(query_logits).numpy(), None),
                               "oracle": (oracle, optimal_thresholds(oracle))}
                for name, (proba, thresholds) in decided.items():
                    scores.setdefault(scenario, {}).setdefault(name, []).append(
                        episode_metrics(proba, labels, thresholds)["macro_f1"])
    return {scenario: {name: float(np.mean(v)) for name, v in rows.items()} for scenario, rows in scores.items()}


def headroom_shares(mean: dict[str, float]) -> dict[str, float]:
    """Each calibrate row's gain over consensus as a share of the oracle's."""
    gap = mean["oracle"] - mean["consensus"]
    return {name: (mean[name] - mean["consensus"]) / gap for name in ROWS if name.startswith("calibrate")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--shots", type=int, default=SHOTS)
    parser.add_argument("--corpus-seed", type=int, action="append", default=[],
                        help="redraw the corpus with this seed (repeatable); default: the task's own draw")
    args = parser.parse_args()
    shares: dict[str, list[float]] = {}
    for seed in args.corpus_seed or [None]:
        task = load_task(args.task, None if seed is None else {"seed": seed})
        draw = "" if seed is None else f", corpus seed {seed}"
        print(f"{task.spec.name}{draw}: mean macro-F1 over the K={args.shots} episodes of every fold")
        for scenario, mean in family_ceiling(task, args.shots).items():
            share = headroom_shares(mean)
            shares.setdefault(scenario, []).append(share["calibrate K"])
            print(f"  {scenario:6s} " + "  ".join(f"{name} {mean[name]:.3f}" for name in ROWS)
                  + f"  | headroom captured: K={args.shots} {share['calibrate K']:.0%}, "
                  f"all {share['calibrate all']:.0%}, K={args.shots} exact {share['calibrate K exact']:.0%}, "
                  f"all exact {share['calibrate all exact']:.0%}")
    if len(args.corpus_seed) > 1:
        for scenario, values in shares.items():
            print(f"  {scenario:6s} calibrate K={args.shots} over {len(values)} draws: mean {np.mean(values):.0%}, "
                  f"min {min(values):.0%}, max {max(values):.0%}")


if __name__ == "__main__":
    main()
