"""``oracle``: the ceiling on the synthetic corpus — the true perception model of the listener.

It reads the generative ground truth of the synthetic corpus (never labels), so it shows how
much a listener's labels can be predicted at all; reports show it as the upper reference.
"""

from __future__ import annotations

import torch

from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.errors import PerserbenchError
from perserbench.method import Method, Predictor
from perserbench.registry import register_method


class _TrueListener:
    def __init__(self, truth: object, listener: str) -> None:
        self.truth = truth
        self.listener = listener

    def predict_proba(self, items: Items) -> torch.Tensor:
        proba = self.truth.listener_proba(self.listener, items.utterance_index)
        return torch.as_tensor(proba, dtype=torch.float32)


@register_method("oracle")
class Oracle(Method):
    """Predicts with the synthetic corpus's true listener model (the ceiling)."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        if train.truth is None:
            raise PerserbenchError(
                f"method 'oracle' needs a synthetic corpus with a known generative model; task "
                f"{train.task_name!r} has none"
            )
        self.truth_ = train.truth

    def adapt(self, support: LabelledItems) -> Predictor:
        return _TrueListener(self.truth_, support.listener)
