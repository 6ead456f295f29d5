"""Is `calibrate`'s miss on prior-shift its model class? A low-dimensional annotator model (issue 14).

`calibrate` describes a listener by 54 numbers (a transform of the consensus logits), learned
from K labels under a prior estimated from a dozen meta-train listeners. The K-shot ceiling
(``bayes_ceiling.py``) shows that a learner who knows the generator and its population gets
far more from the same K labels. This script asks how much of that a learner gets from the
*features* with a model of the annotation process that has only a few numbers per listener:

* **one evidence model for all, listeners apart.** An evidence head ``e(u)`` (the board's head
  architecture, :class:`~perserbench.head.EmotionHead`) is trained on every meta-train
  annotation jointly with each meta-train listener's parameters, by the likelihood of the
  label *set* they gave (the primary-plus-ticks form of
  :meth:`~perserbench.data.synthetic.perception.ListenerModel.every_listener_log_likelihood`);
* **a listener is C + 2 numbers**: a log-prior ``b`` (centred) on the primary choice,
  ``π = softmax(e(u) + b)``, and a tick curve ``(α, β)``: every other class is ticked with
  probability ``q_c = σ(α + β · log(π_c / max π))`` ("how readily they add less evident
  classes"; no confusion between classes);
* **empirical-Bayes population**: a Gaussian over those numbers with the meta-train listeners'
  mean and spread; the K support labels weigh ``members`` listeners drawn from it (importance
  sampling: the exact posterior as the draws grow), and the query's class marginals are the
  posterior mean of ``π + (1 − π) q``;
* **decisions from the support alone**: per-class expected-F1 thresholds
  (:func:`~perserbench.expected_f1.optimal_thresholds`) of the listener's posterior predictive
  on reference episodes of meta-train utterances (20 of 20 items; the median per class), not
  on the query (DESIGN §2).

The model itself lives in :mod:`perserbench.annotator`, since ``calibrate`` pools it with its
transform (``annotator_weight``); this script measures it alone, and ``--select`` the transform
alone (``annotator_weight = 0``) beside it.

Prior-shift listeners are exactly this shape (a log-prior and a soft threshold on relative
evidence); styles and confusion listeners also confuse classes, which it cannot express. It
runs unsealed in one process: a diagnostic that chooses nothing and is not a board entry.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/annotator_model.py synthetic-dev-prior-shift
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/annotator_model.py synthetic-dev-prior-shift --select
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/annotator_model.py synthetic-prior-shift \
        synthetic-prior-shift-draw2 synthetic-prior-shift-draw3 synthetic-prior-shift-draw4 synthetic-prior-shift-draw5

The second line also runs ``calibrate`` and chooses between the two models per episode by the
support's marginal likelihood under each (:func:`selection_records`); the third pools a board
task with its replicate draws as the board's pooled section does. ``--confusion`` lets
listeners confuse classes too: each meta-train listener gets a C × C matrix on the evidence
(a crowd layer, trained with the head) and every population listener takes one of theirs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from bayes_ceiling import BOARD_ROWS, board_means

from perserbench.annotator import (
    EPOCHS,
    MEMBERS,
    Population,
    fit_annotators,
    reference_thresholds,
)
from perserbench.episodes import (
    Episode,
    LabelledItems,
    MetaTrainSet,
    episode_items,
    sample_episodes,
)
from perserbench.metalearn import pad_supports
from perserbench.methods.calibrate import Calibrate, logit_features
from perserbench.metrics import episode_metrics
from perserbench.registry import create_method
from perserbench.runner import _derived_seed
from perserbench.tasks import ListenerFold, ResolvedTask, load_task


@dataclass(frozen=True)
class Settings:
    """What the diagnostic fits: population listeners of the posterior, training epochs of the
    evidence head, and whether listeners also confuse classes (``--confusion``)."""

    members: int = MEMBERS
    epochs: int = EPOCHS
    confusion: bool = False


@dataclass
class FoldModel:
    """One fold's fitted annotator model as the episodes use it: the evidence of every utterance
    [U, C], the population listeners and their marginals on the reference utterances [M, R, C]."""

    evidence: torch.Tensor
    population: Population
    reference_marginals: torch.Tensor

    def predict(self, task: ResolvedTask, episode: Episode) -> tuple[np.ndarray, np.ndarray, float, float]:
        """The query's posterior-predictive marginals [Q, C] (float32, as scored), the reference
        thresholds [C], the support's log marginal likelihood (the importance-sampling estimate
        log mean_m p(support | m)) and the posterior's effective sample size."""
        ann = task.corpus.annotations
        support = torch.from_numpy(ann.labels[episode.support])
        _, log_likelihood = self.population.marginals(self.evidence[ann.utterance[episode.support]], support)
        assert log_likelihood is not None
        weight = torch.softmax(log_likelihood, 0)
        query, _ = self.population.marginals(self.evidence[ann.utterance[episode.query]])
        proba = torch.einsum("m,mqc->qc", weight, query).float().numpy()
        thresholds = reference_thresholds(torch.einsum("m,mrc->rc", weight, self.reference_marginals))
        evidence = float(torch.logsumexp(log_likelihood, 0)) - math.log(len(weight))
        return proba, thresholds, evidence, float(1.0 / weight.square().sum())


def fold_models(task: ResolvedTask,
                settings: Settings = Settings()) -> Iterator[tuple[ListenerFold, MetaTrainSet, FoldModel]]:
    """Each fold with its meta-train set and fitted :class:`FoldModel` (the fold's board method
    seed for the head, the population draw and the reference utterances)."""
    features = torch.from_numpy(np.array(task.features, dtype=np.float32))
    for fold in task.folds:
        seed = _derived_seed(0, fold.index)
        train = MetaTrainSet(task, fold)
        fitted = fit_annotators(train, seed, settings.members, settings.epochs, settings.confusion)
        with torch.no_grad():
            evidence = fitted.head(features).double()
        yield fold, train, FoldModel(evidence, fitted.population, fitted.reference_marginals)


def annotator_scores(task: ResolvedTask, settings: Settings = Settings()) -> dict[tuple[str, int], dict[str, float]]:
    """Per (scenario, K): the annotator model's mean macro-F1 over the task's episodes, the
    posterior's median effective sample size and the number of episodes."""
    labels = task.corpus.annotations.labels
    out: dict[tuple[str, int], dict[str, list[float]]] = {}
    for fold, _, model in fold_models(task, settings):
        for scenario in task.spec.episodes.scenarios:
            for k in task.spec.episodes.shots:
                cell = out.setdefault((scenario, k), {"macro_f1": [], "ess": []})
                for episode in sample_episodes(task, fold, scenario, k):
                    proba, thresholds, _, ess = model.predict(task, episode)
                    cell["macro_f1"].append(episode_metrics(proba, labels[episode.query], thresholds)["macro_f1"])
                    cell["ess"].append(ess)
    return {key: {"macro_f1": float(np.mean(v["macro_f1"])), "ess": float(np.median(v["ess"])),
                  "episodes": float(len(v["macro_f1"]))} for key, v in out.items()}


def selection_records(task: ResolvedTask, settings: Settings = Settings()) -> dict[tuple[str, int], np.ndarray]:
    """Per (scenario, K), one row per episode: macro-F1 of ``calibrate`` (as it runs, the board's
    seed) and of the annotator model, and the support's log marginal likelihood under each:
    ``calibrate``'s (its mixture prior's Laplace evidence, :meth:`Calibrate.component_fits`),
    the same conditioned on every item having a label (``calibrate``'s independent classes
    also give the empty set mass, which no annotator does; evaluated at each component's MAP),
    and the annotator model's. Columns as :data:`SELECTION_COLUMNS`."""
    out: dict[tuple[str, int], list[list[float]]] = {}
    for fold, train, model in fold_models(task, settings):
        calibrate = create_method("calibrate", {"annotator_weight": "0"}, seed=_derived_seed(0, fold.index))
        assert isinstance(calibrate, Calibrate)
        torch.manual_seed(_derived_seed(0, fold.index))
        calibrate.meta_fit(train)
        for scenario in task.spec.episodes.scenarios:
            for k in task.spec.episodes.shots:
                episodes = sample_episodes(task, fold, scenario, k)
                items = [episode_items(task, episode) for episode in episodes]
                with torch.no_grad():
                    z, ys, ms = pad_supports([LabelledItems(calibrate.head_(support.x).double(), support.y)
                                              for support, _, _ in items])
                theta, hessian, joint = calibrate.component_fits(z, ys, ms)  # what adapt_logits fits
                predictors = calibrate.mixture_predictors(theta, hessian, joint)
                config = calibrate.config
                scores = z.unsqueeze(1) + torch.einsum("nkcd,njcd->njkc", logit_features(z, config.mixing, config.margins),
                                                       theta)
                empty = torch.nn.functional.logsigmoid(-scores).sum(-1).exp()  # P(no class) per item
                labelled = (torch.log1p(-empty.clamp(max=1 - 1e-12)) * ms.unsqueeze(1)).sum(-1)
                for i, (episode, (_, query, labels)) in enumerate(zip(episodes, items, strict=True)):
                    proba, thresholds, annotator_evidence, _ = model.predict(task, episode)
                    out.setdefault((scenario, k), []).append([
                        episode_metrics(predictors[i].predict_proba(query).numpy(), labels)["macro_f1"],
                        episode_metrics(proba, labels, thresholds)["macro_f1"],
                        float(torch.logsumexp(joint[i], 0)), float(torch.logsumexp(joint[i] - labelled[i], 0)),
                        annotator_evidence])
    return {key: np.array(rows) for key, rows in out.items()}


SELECTION_COLUMNS = ("calibrate", "annotator", "log Z calibrate", "log Z calibrate | labelled", "log Z annotator")
SELECTION_MARGINS = (-4.0, -2.0, 0.0, 2.0, 4.0)  # log Bayes factors the annotator model must exceed


def print_selection(records: dict[tuple[str, int], np.ndarray]) -> None:
    """Mean macro-F1 per cell of each family and of choosing, per episode, the annotator model
    when its log marginal likelihood exceeds calibrate's by more than each margin (plain, then
    with calibrate's likelihood conditioned on labelled items)."""
    print("cell     calib  annot | choose the annotator if log Z_a − log Z_c > τ, τ = "
          + " ".join(f"{t:g}" for t in SELECTION_MARGINS) + " | the same, Z_c | labelled | annotator chosen at 0")
    means: list[list[float]] = []
    for (scenario, k), rows in records.items():
        calibrate, annotator, plain, labelled, theirs = rows.T
        cells = [calibrate.mean(), annotator.mean()]
        cells += [np.where(theirs - ours > t, annotator, calibrate).mean()
                  for ours in (plain, labelled) for t in SELECTION_MARGINS]
        means.append(cells)
        print(f"{scenario[0]}{k:<7d} " + " ".join(f"{v:.3f}" for v in cells)
              + f" | {np.mean(theirs > labelled):.0%}")
    print("mean     " + " ".join(f"{v:.3f}" for v in np.mean(means, axis=0)))


def cell_table(task: ResolvedTask, settings: Settings = Settings()) -> dict[tuple[str, int], dict[str, float]]:
    """Per (scenario, K): the annotator model's scores (:func:`annotator_scores`) beside the
    committed board's means of :data:`~bayes_ceiling.BOARD_ROWS` on the same split, where the
    board has them."""
    board = board_means(task)
    return {cell: {**row, **{name: board[name][cell] for name in BOARD_ROWS if name in board}}
            for cell, row in annotator_scores(task, settings).items()}


def pool(tables: list[dict[tuple[str, int], dict[str, float]]]) -> dict[tuple[str, int], dict[str, float]]:
    """Several draws' tables as one: every mean weighted by the cell's episodes, which is the
    mean over all their episodes (the board's pooled mean; every listener has as many episodes)."""
    out = {}
    for cell in tables[0]:
        rows = [table[cell] for table in tables]
        weight = np.array([row["episodes"] for row in rows])
        names = [name for name in rows[0] if name not in ("ess", "episodes") and all(name in row for row in rows)]
        out[cell] = {name: float(np.average([row[name] for row in rows], weights=weight)) for name in names}
        out[cell].update(ess=float("nan"), episodes=float(weight.sum()))
    return out


def print_table(title: str, table: dict[tuple[str, int], dict[str, float]]) -> None:
    """One block of cells: the annotator model, its ESS, the board's rows and, where the board
    has consensus, calibrate and oracle, both methods' share of the oracle's headroom."""
    board = [name for name in BOARD_ROWS if all(name in row for row in table.values())]
    print(title)
    print(f"{'cell':8s} {'annot':>6s} {'ESS':>5s}" + "".join(f" {name:>9s}" for name in board)
          + ("  headroom: calibrate / annotator" if len(board) == len(BOARD_ROWS) else ""))
    for (scenario, k), row in table.items():
        line = f"{scenario[0]}{k:<7d} {row['macro_f1']:6.3f} {row['ess']:5.0f}"
        line += "".join(f" {row[name]:9.3f}" for name in board)
        if len(board) == len(BOARD_ROWS):
            cons, cal, orc = (row[name] for name in BOARD_ROWS)
            line += f"  {(cal - cons) / (orc - cons):9.0%} / {(row['macro_f1'] - cons) / (orc - cons):.0%}"
        print(line)
    print(f"mean over cells: {np.mean([row['macro_f1'] for row in table.values()]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="+", help="tasks; a task and its replicate draws are also pooled")
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--confusion", action="store_true",
                        help="listeners also confuse classes: a crowd layer (C x C matrix) per meta-train listener, "
                             "each population listener taking one of theirs")
    parser.add_argument("--select", action="store_true",
                        help="instead, choose per listener between calibrate and this model by marginal likelihood")
    args = parser.parse_args()
    settings = Settings(args.members, args.epochs, args.confusion)
    tables, families = [], set()
    for name in args.task:
        task = load_task(name)
        families.add(task.spec.replicate_of or task.spec.name)
        if args.select:
            print(f"{task.spec.name}: calibrate, the annotator model and a choice between them per episode")
            print_selection(selection_records(task, settings))
            continue
        tables.append(cell_table(task, settings))
        print_table(f"{task.spec.name}: mean macro-F1 per cell, {len(task.folds)} folds, method seed 0 "
                    f"({settings.members} population listeners, {settings.epochs} epochs"
                    f"{', confusion' if settings.confusion else ''})", tables[-1])
    if len(tables) > 1 and len(families) == 1:  # a task and its replicate draws, nothing else
        print_table(f"pooled over {len(tables)} draws (every episode weighs the same)", pool(tables))


if __name__ == "__main__":
    main()
