"""``nearest-centroid``: an example perserbench method shipped as a plugin package.

It personalizes from the support set alone, without training: per class, the centroid of the
listener's support items that carry the class against the centroid of those that do not.
It is deliberately simple — the point is the packaging (entry point group
``perserbench.methods``), but the method is real and uses the support labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.method import Method, Predictor

__all__ = ["NearestCentroid", "NearestCentroidConfig"]


@dataclass
class NearestCentroidConfig:
    temperature: float = field(default=1.0, metadata={
        "doc": "scale of the squared-distance margin (per feature) fed to the logistic; 1 keeps it unitless"})


def _pool(x: torch.Tensor) -> torch.Tensor:
    """[N, L, D] features → [N, D], the mean over upstream layers."""
    return x.float().mean(dim=1)


class _CentroidPredictor:
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 decided: torch.Tensor, prior: torch.Tensor, temperature: float) -> None:
        self.mean, self.std = mean, std
        self.positive, self.negative, self.decided = positive, negative, decided  # [C, D], [C, D], [C]
        self.prior, self.temperature = prior, temperature

    def predict_proba(self, items: Items) -> torch.Tensor:
        z = (_pool(items.x) - self.mean) / self.std  # [N, D]
        d_pos = torch.cdist(z, self.positive).pow(2)  # [N, C]
        d_neg = torch.cdist(z, self.negative).pow(2)
        proba = torch.sigmoid((d_neg - d_pos) / (self.temperature * z.shape[1]))
        return torch.where(self.decided.unsqueeze(0), proba, self.prior.unsqueeze(0).expand_as(proba))


class NearestCentroid(Method):
    """Per-class nearest centroid of the listener's support items (example plugin)."""

    Config = NearestCentroidConfig

    def meta_fit(self, train: MetaTrainSet) -> None:
        pooled = _pool(train.x)
        self.mean_ = pooled.mean(dim=0)
        self.std_ = pooled.std(dim=0).clamp(min=1e-5)
        self.prior_ = train.y.mean(dim=0)  # meta-train listeners' label rate per class

    def adapt(self, support: LabelledItems) -> Predictor:
        z = (_pool(support.x) - self.mean_) / self.std_  # [K, D]
        y = support.y.bool()  # [K, C]
        n_pos, n_neg = y.sum(dim=0), (~y).sum(dim=0)
        positive = (y.float().T @ z) / n_pos.clamp(min=1).unsqueeze(1)
        negative = ((~y).float().T @ z) / n_neg.clamp(min=1).unsqueeze(1)
        decided = (n_pos > 0) & (n_neg > 0)
        return _CentroidPredictor(self.mean_, self.std_, positive, negative, decided, self.prior_,
                                  self.config.temperature)
