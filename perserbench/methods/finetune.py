"""``finetune``: the consensus model, fine-tuned on the test listener's K support items.

The simplest personalization: start from the ``consensus`` model of the fold (the very same
model, same seed) and take a fixed number of full-batch gradient steps on the support set.
Adaptation uses the functional inner loop of :mod:`perserbench.metalearn`, so all test
listeners of a (scenario, K) cell are fine-tuned together in one vmapped computation; the
result is identical to fine-tuning each listener separately (tests/test_methods.py).

Two ways to do no harm: ``pull`` adds an L2 pull toward the consensus
weights to the support loss (a Gaussian prior centred on the consensus model: MAP instead of
maximum likelihood), and ``guard`` keeps a listener at the consensus model unless a
leave-one-out check on its own support says fine-tuning helps (:mod:`perserbench.no_harm`). Chosen on ``synthetic-dev``: the gate
on (it keeps K=1 at consensus and lets a larger step budget pay), the pull off (see the fields).
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
                            "than it protects (the gate already keeps K=1 at consensus), so it is off", ge=0)
    guard: bool = _doc(True, "do-no-harm gate (perserbench.no_harm): keep a listener at the consensus model "
                             "unless fine-tuning on each K-1 subset of the support predicts the left-out item "
                             "better; costs K extra batched fine-tunings (adapt_many 5x at K=5, 30x at K=20). "
                             "synthetic-dev (mean macro-F1 over 8 cells; consensus 0.533), 10 steps: "
                             "ungated/gated 0.546/0.547; gated, K=1 is consensus again (seen/unseen "
                             "0.526/0.540 vs ungated 0.522/0.526); at 20 steps gated 0.554 vs ungated 0.552")
    guard_z: float = _doc(2.0, "the gate's evidence threshold: adapt only where the mean leave-one-out gain "
                               "exceeds guard_z standard errors of the per-item gains (0 = any gain). Mean "
                               "macro-F1 - consensus over 8 cells, z 0/1/2: synthetic-dev-uniform (nobody differs) "
                               "-0.007/-0.005/-0.002, synthetic-dev +0.021/+0.019/+0.015; 2 buys most of the "
                               "harm back for a third of the gain (do no harm first)", ge=0)


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
                               pull=c.pull, guard=c.guard, guard_z=c.guard_z))
