"""``consensus``: one model for everyone, trained on aggregated labels (DESIGN §3).

The reference every personalization method must beat: it learns the meta-train listeners'
consensus labels and ignores the test listener's support set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from perserbench.episodes import LabelledItems, MetaTrainSet
from perserbench.head import EmotionHead, _doc, fit_head, head_for
from perserbench.method import FixedProbabilities, Method, Predictor
from perserbench.registry import register_method


@dataclass
class ConsensusConfig:
    hidden: int = _doc(256, "wide enough for 768-d SSL features, small enough to train in seconds on CPU", ge=1)
    dropout: float = _doc(0.2, "mild regularisation; consensus labels are noisy", ge=0, lt=1)
    layer_weights: bool = _doc(True, "learn a softmax weighting of upstream layers (SUPERB practice)")
    epochs: int = _doc(4, "longer training over-fits the aggregated labels. On the development task "
                                 "synthetic-dev (benchmarks/validate_defaults.py, mean macro-F1 over its 8 cells): "
                                 "epochs 2/4/8 -> 0.527/0.533/0.528", ge=1)
    lr: float = _doc(1e-3, "Adam default; stable for this head size", gt=0)
    batch_size: int = _doc(128, "a few hundred steps per run on a few thousand utterances", ge=1)
    weight_decay: float = _doc(1e-4, "light L2 against overfitting small corpora", ge=0)


def train_consensus(train: MetaTrainSet, config: ConsensusConfig, seed: int) -> EmotionHead:
    """The consensus model; other methods start from it (finetune, meta-perser)."""
    torch.manual_seed(seed)
    head = head_for(train, config.hidden, config.dropout, config.layer_weights)
    return fit_head(head, train.features, train.consensus, epochs=config.epochs, lr=config.lr,
                    batch_size=config.batch_size, weight_decay=config.weight_decay, seed=seed)


@register_method("consensus")
class Consensus(Method):
    """Aggregated-label model of the meta-train listeners; the support set is ignored."""

    Config = ConsensusConfig

    def meta_fit(self, train: MetaTrainSet) -> None:
        self.model_ = train_consensus(train, self.config, self.seed)

    def adapt(self, support: LabelledItems) -> Predictor:
        return FixedProbabilities(self.model_)
