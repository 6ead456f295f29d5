"""The downstream head and loss shared by every built-in method (DESIGN §3).

One head for all methods keeps comparisons about *how a model is personalized*, not about
architectures: optional learned softmax-weighted sum over upstream layers → Linear → ReLU →
Dropout → Linear(C), on features standardised with statistics of the fold's training
utterances only. The loss is multi-label BCE with per-class positive weights from the label
frequencies of the training data, so rare emotions are not ignored under macro-F1.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch
from torch import nn

from perserbench.episodes import MetaTrainSet
from perserbench.featurerows import FeatureRows

MAX_POS_WEIGHT = 20.0


def _doc(default: Any, why: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A config field whose default carries its reason (shown by ``perserbench methods``) and
    whose valid values are declared beside it (``ge``/``gt``/``le``/``lt`` bounds, ``choices``),
    so :func:`perserbench.registry.check_config` refuses ``epochs=-3`` before any work instead
    of training nothing and writing a normal-looking result."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata: dict[str, Any] = {"doc": why}
    if bounds:
        metadata["bounds"] = bounds
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return field(default=default, metadata=metadata)


class _LayerSum(torch.autograd.Function):
    """``Σ_l x[..., l, :] · scale[l]`` (the accumulation in :func:`pool_features`) with a
    hand-written backward for ``scale``; ``x`` is data and gets no gradient.

    Why: autograd's backward of the addcmul chain computes, per layer, ``x_l · 1`` (addcmul's
    ``value``), then ``grad · x_l`` reduced over the items, then scatters that row into a zero
    [L, D] tensor and sums the L scattered tensors. Here the same products and the same
    reductions give the rows directly, so the gradient is the same floats with a third of the
    ops (about 0.7 ms less per pooled meta-batch at 13 × 768, measured); only the meta-training
    loss uses it (:func:`perserbench.metalearn.dual_meta_loss`), where the pooling runs on a
    whole meta-batch outside any ``torch.func`` transform."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor,  # type: ignore[override]
                scale: torch.Tensor) -> torch.Tensor:
        pooled = x[..., 0, :] * scale[0]
        for layer in range(1, x.shape[-2]):
            pooled = torch.addcmul(pooled, x[..., layer, :], scale[layer])
        ctx.save_for_backward(x)
        return pooled

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        items = tuple(range(grad.dim() - 1))
        rows = [(grad * x[..., layer, :]).sum(dim=items, keepdim=True).view(-1) for layer in range(x.shape[-2])]
        return None, torch.stack(rows)


def pool_features(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  layer_logits: torch.Tensor, lean_backward: bool = False) -> torch.Tensor:
    """Standardise ``[..., L, D]`` features and take the softmax-weighted sum over layers →
    ``[..., D]``. A free function so the functional meta-learning core (perserbench.metalearn)
    computes exactly what :meth:`EmotionHead.embed` computes. Written as a weighted
    accumulation over layers (Σ_l x_l·w_l/σ_l − Σ_l w_l·μ_l/σ_l) rather than
    standardise-then-sum: same value, but no [N, L, D] temporaries — one pass over the
    features, ~6x faster for large batches, which is most of the cost of adapting many
    listeners at once. ``lean_backward``: the same floats, forward and backward, with fewer ops
    in the backward (:class:`_LayerSum`; not for use inside ``torch.func`` transforms)."""
    scale = torch.softmax(layer_logits, dim=0).unsqueeze(-1) / std
    if lean_backward and not x.requires_grad:
        pooled = _LayerSum.apply(x, scale)
    else:
        pooled = x[..., 0, :] * scale[0]
        for layer in range(1, x.shape[-2]):
            pooled = torch.addcmul(pooled, x[..., layer, :], scale[layer])
    return pooled - (scale * mean).sum(dim=0)


class EmotionHead(nn.Module):
    """Utterance-level multi-label classifier over ``[N, L, D]`` features."""

    def __init__(self, n_layers: int, dim: int, n_classes: int, hidden: int = 256,
                 dropout: float = 0.2, layer_weights: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_layers, dim))
        self.register_buffer("std", torch.ones(n_layers, dim))
        # Learned only when enabled; otherwise a uniform average over layers.
        self.layer_logits = nn.Parameter(torch.zeros(n_layers), requires_grad=layer_weights)
        self.hidden = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_classes)

    def set_standardizer(self, x: torch.Tensor | FeatureRows) -> None:
        """Fix the feature standardisation from training utterances ``x`` [U, L, D] (a tensor,
        or :class:`FeatureRows` reduced batch by batch)."""
        mean, std = x.mean_std() if isinstance(x, FeatureRows) else (x.mean(dim=0), x.std(dim=0))
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-5))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden representation [N, hidden] (used by prototype-based methods)."""
        pooled = pool_features(x, self.mean, self.std, self.layer_logits)
        return self.dropout(torch.relu(self.hidden(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(x))


def head_for(train: MetaTrainSet, hidden: int, dropout: float, layer_weights: bool) -> EmotionHead:
    """A fresh head shaped for ``train``'s features, standardised on its utterances."""
    _, n_layers, dim = train.features.shape
    head = EmotionHead(n_layers, dim, train.n_classes, hidden, dropout, layer_weights)
    head.set_standardizer(train.features)
    return head


def positive_weights(y: torch.Tensor) -> torch.Tensor:
    """Per-class BCE positive weight = negatives / positives, clipped to [1, 20] so that a
    class seen once cannot dominate the loss."""
    pos = y.sum(dim=0)
    neg = y.shape[0] - pos
    return (neg / pos.clamp(min=1.0)).clamp(1.0, MAX_POS_WEIGHT)


def balanced_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)


def fit_head(head: EmotionHead, x: torch.Tensor | FeatureRows, y: torch.Tensor, *, epochs: int, lr: float,
             batch_size: int, weight_decay: float, seed: int,
             pos_weight: torch.Tensor | None = None) -> EmotionHead:
    """Minibatch Adam on (x, y); deterministic for a seed. Leaves the head in eval mode.
    ``x`` may be :class:`FeatureRows`: each minibatch is then read (and pooled) on its own."""
    generator = torch.Generator().manual_seed(seed)
    weights = positive_weights(y) if pos_weight is None else pos_weight
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            balanced_bce(head(x[batch]), y[batch], weights).backward()
            optimizer.step()
    head.eval()
    return head
