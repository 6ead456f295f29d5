"""``maml``: vanilla MAML over meta-train listener episodes (DESIGN §3).

Each outer step samples a meta-batch of meta-train listeners; each listener's labelled items
are split into a support set (inner loop: a few SGD steps from the shared initialisation) and
a disjoint query set (outer loss). Second order by default. Meta-training and test-time
adaptation run on the functional core (:mod:`perserbench.metalearn`), batched over listeners.

:class:`MamlConfig` holds every switch of the MAML family, so ``meta-perser`` (and any
ablation of it) is the same code with other values: ``-c combined=false`` etc.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from perserbench.episodes import LabelledItems, MetaTrainSet
from perserbench.errors import PerserbenchError
from perserbench.head import EmotionHead, _doc, head_for, positive_weights
from perserbench.metalearn import COMBINED_INNER, MetaLearner
from perserbench.method import Method, Predictor
from perserbench.methods.consensus import ConsensusConfig, train_consensus
from perserbench.no_harm import FOLDS, FOLDS_DOC
from perserbench.registry import register_method

INITS = ("random", "consensus")
FALLBACKS = ("init", "consensus")


@dataclass
class MamlConfig:
    init: str = _doc("random", "vanilla MAML learns its initialisation from scratch; 'consensus' starts from "
                               "the fold's consensus model (the meta-perser pretraining)", choices=INITS)
    pretrain_epochs: int = _doc(4, "with init='consensus': epochs of the consensus pretraining (the consensus "
                                   "method's own 4 by default, i.e. the same model)", ge=0)
    hidden: int = _doc(256, "the shared head's width (as consensus), so methods differ only in training", ge=1)
    layer_weights: bool = _doc(True, "meta-learn the softmax weighting of upstream layers (outer loop only)")
    meta_epochs: int = _doc(3, "3 x 40 = 120 outer steps. synthetic-dev (maml, mean macro-F1 over 8 cells; "
                               "consensus 0.533): meta_epochs 1/3/6 -> 0.540/0.545/0.541; longer meta-training "
                               "does not pay on a corpus with 12 meta-train listeners per fold", ge=0)
    steps_per_epoch: int = _doc(40, "outer steps per meta-epoch; epochs are the unit of the annealing schedules", ge=1)
    meta_batch: int = _doc(8, "listeners per outer step (the issue's benchmark setting); more gives smoother "
                              "meta-gradients at proportional cost", ge=1)
    support: int = _doc(5, "inner-loop items per training episode: the geometric middle of the benchmark's "
                           "K = 1..20, so one meta-training serves every K", ge=1)
    query: int = _doc(15, "outer-loss items per training episode (disjoint from the support unless combined)", ge=1)
    combined: bool = _doc(False, "vanilla MAML: disjoint support/query split within each sampled listener")
    combined_inner: str = _doc("support", "with combined: what the inner loop adapts on -- 'support' (the first "
                                          "`support` items; the outer loss covers support+query) or 'all' (inner = "
                                          "outer = support+query, the other reading of the paper). synthetic-dev, "
                                          "meta-perser: 'support' 0.544, 'all' 0.368 (see metalearn.EpisodeSampler)", choices=COMBINED_INNER)
    inner_steps: int = _doc(5, "inner SGD steps at meta-training and at test time (MAML's usual 5)", ge=0)
    adapt_steps: int = _doc(-1, "inner steps at test time; -1 = inner_steps. 0 evaluates the meta-learned "
                                "init unadapted (the ablation that separates personalization from the init)", ge=-1)
    inner_lr: float = _doc(0.1, "inner SGD lr. synthetic-dev (maml, mean macro-F1 over 8 cells; consensus "
                                "0.533): 0.03/0.1/0.3 -> 0.544/0.545/0.546, flat; 0.3 costs K=1 (unseen "
                                "0.511 vs 0.527 at 0.1) for K=20 gains; 0.1 is the middle", gt=0)
    outer_lr: float = _doc(1e-3, "Adam on the meta-parameters; MAML's default", gt=0)
    per_step_lrs: bool = _doc(False, "vanilla MAML: one fixed inner lr. When learned, the lrs are projected onto "
                                     ">= 0 after every outer step (metalearn.project_learning_rates)")
    first_order_epochs: int = _doc(0, "vanilla MAML is second order throughout; set to meta_epochs for FOMAML", ge=0)
    multi_step_loss: bool = _doc(False, "vanilla MAML: outer loss after the last inner step only")
    multi_step_epochs: int = _doc(5, "with multi_step_loss: epochs over which the per-step loss weights anneal "
                                     "from uniform to the last step (MAML++)", ge=0)
    dual: bool = _doc(True, "exact low-rank form of the first layer's inner updates (~5-10x faster on CPU); "
                            "False = materialised weights through functional_call, same numbers")
    chunk: int = _doc(256, "test listeners adapted per vmap call; bounds memory for large cells", ge=1)
    guard: bool = _doc(True, "do-no-harm gate (perserbench.no_harm): keep a listener at the fallback model "
                             "(see fallback) unless adapting on the other folds of the support predicts each held-out "
                             "fold's items better; costs up to guard_folds extra batched adaptations; False = "
                             "the ungated method. "
                             "synthetic-dev (mean macro-F1 over 8 cells; consensus 0.533): maml ungated/gated "
                             "0.545/0.547, meta-perser 0.543/0.544; gated, K=1 keeps the unadapted init "
                             "(meta-perser K=1 seen/unseen 0.514/0.522 -> 0.523/0.533)")
    guard_folds: int = _doc(FOLDS, FOLDS_DOC + " (as finetune's, where 5 folds scored as leave-one-out at less "
                                               "cost)", ge=2)
    guard_z: float = _doc(2.0, "the gate's evidence level, as a normal quantile: adapt only where a one-sided "
                               "paired t-test of the per-item held-out gains passes at level 1 - Phi(z) (0 = "
                               "any gain). With the gate's first form (leave-one-out, gain > z*SE), maml, mean "
                               "macro-F1 - consensus over 8 cells, defaults before "
                               "(fallback=init, z=0) -> (fallback=consensus, z=2): uniform development "
                               "controls (nobody differs) styles/confusion/prior-shift -0.002/-0.004/-0.002 -> "
                               "-/-0.000/-0.000 (styles with fallback=consensus, z=0: -0.001); heterogeneous "
                               "synthetic-dev +0.014 -> +0.009, -confusion -0.003 -> +0.000, -prior-shift "
                               "+0.014 -> +0.009. Today's gate (5 folds, t-test), z=2: synthetic-dev +0.008. "
                               "Do no harm first, as finetune and protonet", ge=0)
    fallback: str = _doc("consensus", "what a listener the gate rejects (and every K=1 listener: nothing can be "
                                      "left out) keeps: 'init' = the meta-learned initialisation, 'consensus' = "
                                      "the fold's consensus model (trained for it when init=random; the gate then "
                                      "compares the adaptation with it). With z=0, init/consensus: synthetic-dev "
                                      "+0.014/+0.013, synthetic-dev-uniform -0.002/-0.001 (figures with z=2 under "
                                      "guard_z)",
                         choices=FALLBACKS)


class MamlFamily(Method):
    """Shared implementation of ``maml`` and ``meta-perser``: only the config differs."""

    Config = MamlConfig

    def _check(self) -> None:
        c = self.config
        if c.init not in INITS:
            raise PerserbenchError(f"method {self.name!r}: config init={c.init!r}; choose one of {', '.join(INITS)}")
        if c.fallback not in FALLBACKS:
            raise PerserbenchError(f"method {self.name!r}: config fallback={c.fallback!r}; choose one of "
                                   f"{', '.join(FALLBACKS)}")
        for key in ("pretrain_epochs", "meta_epochs", "steps_per_epoch", "meta_batch", "support", "query", "inner_steps"):
            if getattr(c, key) < (0 if key in ("pretrain_epochs", "meta_epochs", "inner_steps") else 1):
                raise PerserbenchError(f"method {self.name!r}: config {key}={getattr(c, key)} is out of range")
        if not -1 <= c.adapt_steps <= c.inner_steps:
            raise PerserbenchError(f"method {self.name!r}: config adapt_steps={c.adapt_steps} must be -1 (= "
                                   f"inner_steps) or 0..inner_steps={c.inner_steps} (one learned lr per step)")

    def initial_head(self, train: MetaTrainSet) -> EmotionHead:
        c = self.config
        if c.init == "consensus":
            return train_consensus(train, ConsensusConfig(hidden=c.hidden, layer_weights=c.layer_weights,
                                                          epochs=c.pretrain_epochs), self.seed)
        torch.manual_seed(self.seed)
        return head_for(train, c.hidden, 0.0, c.layer_weights)

    def meta_fit(self, train: MetaTrainSet) -> None:
        self._check()
        c = self.config
        head = self.initial_head(train)
        self.fallback_: EmotionHead | None = None
        if c.guard and c.fallback == "consensus":  # the init is the consensus model, or one is trained for it
            self.fallback_ = copy.deepcopy(head).eval() if c.init == "consensus" and c.pretrain_epochs == ConsensusConfig().epochs else (
                train_consensus(train, ConsensusConfig(hidden=c.hidden, layer_weights=c.layer_weights), self.seed))
        self.learner_ = MetaLearner(head, positive_weights(train.y), c, self.seed)
        self.learner_.fit(train)

    def adapt(self, support: LabelledItems) -> Predictor:
        return self.adapt_many([support])[0]

    def adapt_many(self, supports: list[LabelledItems]) -> list[Predictor]:
        return list(self.learner_.adapt_many(supports, self.fallback_))


@register_method("maml")
class Maml(MamlFamily):
    """Vanilla MAML over listener episodes (support/query split, second order)."""

    Config = MamlConfig
