"""``finetune``: the consensus model, fine-tuned on the test listener's K support items.

The simplest personalization: start from the ``consensus`` model of the fold (the very same
model, same seed) and take a fixed number of full-batch gradient steps on the support set.
Adaptation uses the functional inner loop of :mod:`perserbench.metalearn`, so all test
listeners of a (scenario, K) cell are fine-tuned together in one vmapped computation; the
result is identical to fine-tuning each listener separately (tests/test_methods.py).

Two ways to do no harm: ``pull`` adds an L2 pull toward the consensus
weights to the support loss (a Gaussian prior centred on the consensus model: MAP instead of
maximum likelihood), and ``guard`` keeps a listener at the consensus model unless a
cross-validated check on its own support says fine-tuning helps (:mod:`perserbench.no_harm`).
Chosen on ``synthetic-dev``: the gate on (it keeps K=1 at consensus and lets a larger step
budget pay), the pull off (see the fields). The ``steps``, ``lr`` and ``guard`` figures were
measured with the gate's first form (leave-one-out, ``gain > z·SE``); ``guard_z``,
``guard_folds`` and the second ``pull`` comparison with today's (5 folds, a t-test).
"""

from __future__ import annotations

from dataclasses import dataclass

from perserbench.episodes import LabelledItems, MetaTrainSet
from perserbench.errors import PerserbenchError
from perserbench.head import _doc, positive_weights
from perserbench.metalearn import (
    DualForm,
    PlainForm,
    adapt_many,
    inner_learning_rates,
    meta_parameters,
)
from perserbench.method import Method, Predictor
from perserbench.methods.consensus import ConsensusConfig, train_consensus
from perserbench.no_harm import FOLDS, FOLDS_DOC
from perserbench.registry import register_method


@dataclass
class FinetuneConfig:
    steps: int = _doc(20, "fixed budget instead of early stopping: with K=1..20 items there is nothing to "
                          "early-stop on. synthetic-dev (mean macro-F1 over 8 cells; consensus 0.533), lr 0.05: "
                          "ungated steps 5/10/20 -> 0.540/0.546/0.552, but ungated K=1 unseen falls to 0.520 "
                          "at 20 (consensus 0.540); gated (guard=true) steps 10/20 -> 0.547/0.554 with K=1 "
                          "exactly consensus, so the gate lets the larger budget pay at K>=5", ge=0)
    lr: float = _doc(0.05, "plain SGD step. synthetic-dev (mean macro-F1 over 8 cells; consensus 0.533): "
                           "lr 0.02/0.05/0.1 -> 0.540/0.546/0.552, but K=1 unseen 0.533/0.526/0.518 vs "
                           "consensus 0.540: a larger step gains at K>=10 and harms more at K=1; 0.05 is "
                           "the middle (do no harm weighs against 0.1)", gt=0)
    dual: bool = _doc(True, "exact low-rank form of the first layer's updates (fast); False = materialised "
                            "weights through functional_call (same result, slower)")
    chunk: int = _doc(256, "listeners adapted per vmap call; bounds memory for large cells", ge=1)
    pull: float = _doc(0.0, "L2 pull toward the consensus weights: the support loss gets pull/2 * "
                            "||theta - theta_consensus||^2 (0 = plain fine-tuning); lr * pull must stay below 2 "
                            "or the pull's own gradient step diverges. synthetic-dev, gated, lr 0.05: pull 0/1 "
                            "-> 0.547/0.543 at 10 steps, 0.554/0.547 at 20 steps: the pull costs more at K>=10 "
                            "than it protects (the gate already keeps K=1 at consensus), so it is off. Today's "
                            "gate at z=2, pull 0/1 (mean - consensus): synthetic-dev +0.012/+0.008, "
                            "synthetic-dev-uniform -0.001/-0.001: still no protection for its cost", ge=0)
    guard: bool = _doc(True, "do-no-harm gate (perserbench.no_harm): keep a listener at the consensus model "
                             "unless fine-tuning on the other folds of the support predicts each held-out fold's items "
                             "better (guard_z, guard_folds); costs up to guard_folds extra batched fine-tunings. "
                             "synthetic-dev (mean macro-F1 over 8 cells; consensus 0.533), 10 steps: "
                             "ungated/gated 0.546/0.547; gated, K=1 is consensus again (seen/unseen "
                             "0.526/0.540 vs ungated 0.522/0.526); at 20 steps gated 0.554 vs ungated 0.552")
    guard_folds: int = _doc(FOLDS, FOLDS_DOC + ". synthetic-dev, gated at z=2: 5 folds 0.545 vs leave-one-out "
                                               "0.546 (mean macro-F1 over 8 cells), synthetic-dev-uniform -0.001 "
                                               "vs -0.002 to consensus, and a run 22-24 s vs 27-28 s wall: the "
                                               "same items are scored with a quarter of the adaptations at K=20",
                            ge=2)
    guard_z: float = _doc(2.5, "the gate's evidence level, as a normal quantile: adapt only where a one-sided "
                               "paired t-test of the per-item held-out gains passes at level 1 - Phi(z) (2.5: "
                               "0.6%; 0 = any gain). Mean macro-F1 - consensus over 8 cells, z 1.5/2/2.5/3: "
                               "synthetic-dev-uniform (nobody differs) -0.003/-0.001/-0.000/-0.000, synthetic-dev "
                               "+0.016/+0.012/+0.008/+0.004. At z=2, 4% of uniform K=5 supports pass and K=5 "
                               "falls 0.004/0.003 (seen/unseen) below consensus: each adapted listener loses "
                               "about 0.09, because 20 steps on 5 items move a lot. 2.5 is the smallest z with "
                               "no uniform cell more than 0.002 below consensus (do no harm first)", ge=0)


@register_method("finetune")
class Finetune(Method):
    """Consensus model fine-tuned on the listener's support set (fixed steps, small lr)."""

    Config = FinetuneConfig

    def meta_fit(self, train: MetaTrainSet) -> None:
        c = self.config
        if c.lr * c.pull >= 2:
            raise PerserbenchError(f"method 'finetune': config lr * pull = {c.lr * c.pull:g} must be below 2 (each "
                                   "step scales the distance to consensus by 1 - lr * pull, so 2 or more diverges)")
        head = train_consensus(train, ConsensusConfig(), self.seed)
        self.form_ = DualForm(head) if self.config.dual else PlainForm(head)
        self.meta_ = {k: v.detach() for k, v in meta_parameters(head).items()}
        self.lrs_ = inner_learning_rates(self.config.steps, self.config.lr, learnable=False)
        self.pos_weight_ = positive_weights(train.y)

    def adapt(self, support: LabelledItems) -> Predictor:
        return self.adapt_many([support])[0]

    def adapt_many(self, supports: list[LabelledItems]) -> list[Predictor]:
        c = self.config
        return list(adapt_many(self.form_, self.meta_, self.lrs_, supports, self.pos_weight_, c.steps, c.chunk,
                               pull=c.pull, guard=c.guard, guard_z=c.guard_z, guard_folds=c.guard_folds))
