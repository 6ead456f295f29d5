"""Do no harm: a leave-one-out gate between an adapted model and the unadapted one (issue 14).

Every adaptive built-in (``finetune``, ``maml``, ``meta-perser``, ``protonet``) starts from a
model that is already good for everyone (consensus, or the meta-learned init) and moves it
toward a listener from K support items. When those items carry no evidence that the listener
differs — K=1, a listener who hears like everyone else, noisy labels — moving can only cost.
The support itself can say whether it does: adapt on each K−1 subset, score the left-out item
under that adapted model and under the unadapted one, and keep the adapted model only if it
predicts the items it did not see better on average. That is leave-one-out cross-validation
of the choice "adapt or not" — the only held-out data a listener has is its own support.

Why leave-one-out and not a shrinkage strength learned on meta-train listeners: it needs no
model of *how much* listeners differ (which a uniform listener violates), it reuses each
method's own batched adaptation unchanged (``fit_predict``), and it is a pure function of the
fitted method and one listener's support, so it keeps the runner's independence audit. It costs
K extra adaptations per listener, batched: the listener's K leave-one-out sets are K extra rows
of the same batched computation.

The score is the methods' own training loss, the class-balanced BCE per item (a proper scoring
rule, so a model is not rewarded for being over-confident). With one support item there is
nothing to leave out (the K−1 = 0 model *is* the unadapted one): such listeners stay unadapted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F

# (support x [M, K, L, D], y [M, K, C], mask [M, K], query x [M, Q, L, D]) -> query logits [M, Q, C]:
# a method's batched adaptation followed by prediction, M independent listeners.
FitPredict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

T = TypeVar("T")


@dataclass(frozen=True)
class LooEvidence:
    """Per listener [N]: mean loss on each left-out support item under the model adapted
    without it and under the unadapted model, and how many items were left out."""

    adapted_loss: torch.Tensor
    unadapted_loss: torch.Tensor
    held_out: torch.Tensor
    gain_se: torch.Tensor  # standard error of the mean per-item gain (0 where fewer than 2 items)

    @property
    def gain(self) -> torch.Tensor:
        """How much adapting lowered the held-out loss (positive = adaptation helped)."""
        return self.unadapted_loss - self.adapted_loss

    def keep(self, z: float = 0.0) -> torch.Tensor:
        """Adapt only where at least two items could be left out and adapting helped on them by
        more than ``z`` standard errors of the per-item gain (``z = 0``: helped at all). A
        positive ``z`` is a one-sided test: with K−1 held-out items a noisy support passes
        ``gain > 0`` about half the time even when adaptation cannot help."""
        return (self.held_out >= 2) & (self.gain > z * self.gain_se)


def item_loss(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE per item (mean over classes): the loss the methods train on."""
    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight, reduction="none").mean(-1)


def leave_one_out_sets(xs: torch.Tensor, ys: torch.Tensor,
                       ms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The K leave-one-out supports of each of N padded supports, as N·K rows: row ``i·K + j``
    is support ``i`` with slot ``j`` masked out (its mask is ``ms[i]`` with a 0 at ``j``).
    Returns (x [N·K, K, ...], y [N·K, K, C], mask [N·K, K], held [N·K]: slot j is a real item)."""
    n, k = ms.shape
    drop = 1.0 - torch.eye(k, dtype=ms.dtype)
    masks = (ms.unsqueeze(1) * drop).reshape(n * k, k)
    x = xs.unsqueeze(1).expand(n, k, *xs.shape[1:]).reshape(n * k, *xs.shape[1:])
    y = ys.unsqueeze(1).expand(n, k, *ys.shape[1:]).reshape(n * k, *ys.shape[1:])
    return x, y, masks, ms.reshape(n * k) > 0


def loo_evidence(fit_predict: FitPredict, unadapted_logits: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
                 ms: torch.Tensor, pos_weight: torch.Tensor, chunk: int = 256) -> LooEvidence:
    """Leave-one-out evidence for N listeners' supports (``xs`` [N, K, L, D], ``ys``, mask ``ms``);
    ``unadapted_logits`` [N, K, C] are the unadapted model's logits on the support items.

    Listeners are processed ``max(1, chunk // K)`` at a time (``chunk`` leave-one-out rows per
    ``fit_predict`` call), so memory is that of adapting ``chunk`` listeners; no listener's
    evidence depends on another's, so the result does not depend on the chunking."""
    n, k = ms.shape
    per = max(1, chunk // max(k, 1))
    adapted = []
    with torch.no_grad():
        for start in range(0, n, per):
            sl = slice(start, start + per)
            x, y, m, _ = leave_one_out_sets(xs[sl], ys[sl], ms[sl])
            left_out = xs[sl].reshape(-1, 1, *xs.shape[2:])  # row i·K + j scores item j of listener i
            adapted.append(fit_predict(x, y, m, left_out)[:, 0].reshape(-1, k, ys.shape[-1]))
        adapted_logits = torch.cat(adapted) if adapted else unadapted_logits
        weight = ms.float()
        held = weight.sum(-1)
        denom = held.clamp(min=1.0)
        adapted_items = item_loss(adapted_logits, ys, pos_weight)
        unadapted_items = item_loss(unadapted_logits, ys, pos_weight)
        adapted_loss = (adapted_items * weight).sum(-1) / denom
        unadapted_loss = (unadapted_items * weight).sum(-1) / denom
        gains = unadapted_items - adapted_items
        mean_gain = (unadapted_loss - adapted_loss).unsqueeze(-1)
        variance = (((gains - mean_gain) ** 2) * weight).sum(-1) / (held - 1).clamp(min=1.0)
        gain_se = torch.where(held >= 2, (variance / denom).sqrt(), torch.zeros_like(held))
    return LooEvidence(adapted_loss, unadapted_loss, held, gain_se)


def choose(keep: torch.Tensor, adapted: Sequence[T], unadapted: Sequence[T]) -> list[T]:
    """Per listener, the adapted model where ``keep`` and the unadapted one elsewhere."""
    return [a if bool(k) else u for k, a, u in zip(keep.tolist(), adapted, unadapted, strict=True)]


def select_states(keep: torch.Tensor, adapted: dict[str, torch.Tensor],
                  unadapted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`choose` for batched states (dicts of tensors with a leading listener dimension)."""
    def pick(a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.where(keep.view(-1, *([1] * (a.dim() - 1))), a, u.expand_as(a))
    return {name: pick(a, unadapted[name]) for name, a in adapted.items()}
