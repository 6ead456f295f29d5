"""Do no harm: a cross-validated gate between an adapted model and the unadapted one (issue 14).

Every adaptive built-in (``finetune``, ``maml``, ``meta-perser``, ``protonet``) starts from a
model that is already good for everyone (consensus, or the meta-learned init) and moves it
toward a listener from K support items. When those items carry no evidence that the listener
differs — K=1, a listener who hears like everyone else, noisy labels — moving can only cost.
The support itself can say whether it does: split it into V folds, adapt on all but one, score
the held-out fold's items under that adapted model and under the unadapted one, and keep the
adapted model only if it predicts the items it did not see significantly better (a one-sided
paired t-test over the items). That is cross-validation of the choice "adapt or not" — the
only held-out data a listener has is its own support. With K ≤ V it is leave-one-out.

Why cross-validation and not a shrinkage strength learned on meta-train listeners: it needs no
model of *how much* listeners differ (which a uniform listener violates), it reuses each
method's own batched adaptation unchanged (``fit_predict``), and it is a pure function of the
fitted method and one listener's support, so it keeps the runner's independence audit. It costs
V adaptations per listener, batched: the listener's V training sets are V rows of one batched
computation. The decision comes first, so the adaptation on the whole support is run only for
the listeners the gate keeps (:func:`adapt_kept`), and with one item per listener nothing is
fitted at all (the four gated methods on two board tasks: 0.89x the CPU, every record
unchanged). Why V = 5 and not leave-one-out: the same items are scored, at a quarter of
leave-one-out's adaptations at K = 20 (``synthetic-dev``: the same macro-F1 to 0.001, and a
gated ``finetune`` run about 15 % faster).

The score is the methods' own training loss, the class-balanced BCE per item (a proper scoring
rule, so a model is not rewarded for being over-confident). With one support item there is
nothing to hold out (the K−1 = 0 model *is* the unadapted one): such listeners stay unadapted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from scipy import stats

# (support x [M, K, L, D], y [M, K, C], mask [M, K], query x [M, Q, L, D]) -> query logits [M, Q, C]:
# a method's batched adaptation followed by prediction, M independent listeners.
FitPredict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

T = TypeVar("T")

# Folds of the gate's cross-validation: K ≤ FOLDS is leave-one-out (every built-in's default).
FOLDS = 5
# What the gated methods' ``guard_folds`` config field is; each method adds its own evidence.
FOLDS_DOC = "folds of the gate's cross-validation (perserbench.no_harm); K <= guard_folds is leave-one-out"


@dataclass(frozen=True)
class HeldOutEvidence:
    """Per listener [N]: mean loss on its support items, each scored by the model adapted
    without that item's fold and by the unadapted model, and how many items were held out."""

    adapted_loss: torch.Tensor
    unadapted_loss: torch.Tensor
    held_out: torch.Tensor
    gain_se: torch.Tensor  # standard error of the mean per-item gain (0 where fewer than 2 items)

    @property
    def gain(self) -> torch.Tensor:
        """How much adapting lowered the held-out loss (positive = adaptation helped)."""
        return self.unadapted_loss - self.adapted_loss

    def keep(self, z: float = 0.0) -> torch.Tensor:
        """Adapt only where at least two items were held out and adapting helped on them
        significantly: a one-sided paired t-test of the per-item gains at level
        ``α = 1 − Φ(z)`` (``z = 2``: α ≈ 2.3 %; ``z = 0``: helped at all). Why Student's t and
        not ``z`` standard errors: with 5 held-out items (4 degrees of freedom) the sample SD is
        itself noisy, so ``gain > 2·SE`` passes 5.8 % of normal no-evidence gains, 2.5 times the
        stated level, and small K is exactly where the gate matters."""
        n = self.held_out  # z = 0: the t quantile at 0.5 is exactly 0, so "helped at all"
        quantile = torch.from_numpy(stats.t.ppf(stats.norm.cdf(z), (n - 1).clamp(min=1).double().numpy()))
        return (n >= 2) & (self.gain > quantile.to(self.gain) * self.gain_se)


def item_loss(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE per item (mean over classes): the loss the methods train on."""
    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight, reduction="none").mean(-1)


def fold_count(k: int, folds: int) -> int:
    """V = min(k, folds) folds for supports padded to ``k`` slots (at least one)."""
    return max(1, min(k, folds))


def slot_folds(k: int, folds: int) -> torch.Tensor:
    """The cross-validation fold of each of ``k`` support slots: slot ``j`` is in fold
    ``j mod V`` (:func:`fold_count`). A listener's real items fill its first slots, so one
    with more than ``folds`` items always gets ``folds`` folds and one with fewer is left out
    one item at a time: either way its folds, and its evidence, do not depend on the padded
    width ``k``, that is on who shares its batch."""
    return torch.arange(k) % fold_count(k, folds)


def cross_validation_sets(xs: torch.Tensor, ys: torch.Tensor, ms: torch.Tensor,
                          folds: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The V = min(K, ``folds``) training sets of each of N padded supports, as N·V rows: row
    ``i·V + v`` is support ``i`` with the slots of fold ``v`` (:func:`slot_folds`) masked out.
    Returns (x [N·V, K, ...], y [N·V, K, C], mask [N·V, K])."""
    n, k = ms.shape
    fold, v = slot_folds(k, folds), fold_count(k, folds)
    keep = (fold.unsqueeze(0) != torch.arange(v).unsqueeze(1)).to(ms.dtype)  # [V, K]
    masks = (ms.unsqueeze(1) * keep).reshape(n * v, k)
    x = xs.unsqueeze(1).expand(n, v, *xs.shape[1:]).reshape(n * v, *xs.shape[1:])
    y = ys.unsqueeze(1).expand(n, v, *ys.shape[1:]).reshape(n * v, *ys.shape[1:])
    return x, y, masks


def held_out_evidence(fit_predict: FitPredict, unadapted_logits: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
                      ms: torch.Tensor, pos_weight: torch.Tensor, chunk: int = 256,
                      folds: int = FOLDS) -> HeldOutEvidence:
    """Cross-validated evidence for N listeners' supports (``xs`` [N, K, L, D], ``ys``, mask
    ``ms``); ``unadapted_logits`` [N, K, C] are the unadapted model's logits on the support items.
    Each item is scored once, by the model adapted on the other folds; ``folds`` ≥ K is
    leave-one-out. Why not always leave-one-out: it costs K adaptations per listener (20 at
    K = 20) where V-fold costs V, and V-fold scores the same items.

    Listeners are processed ``max(1, chunk // V)`` at a time (``chunk`` rows per
    ``fit_predict`` call), so memory is that of adapting ``chunk`` listeners; no listener's
    evidence depends on another's, so the result does not depend on the chunking."""
    n, k = ms.shape
    fold, v = slot_folds(k, folds), fold_count(k, folds)
    per = max(1, chunk // v)
    weight = ms.float()
    held = weight.sum(-1)
    # A listener with fewer than 2 items cannot pass (:meth:`HeldOutEvidence.keep`), so when no
    # listener has 2, no model is fitted (at K = 1 the whole gate is free): the evidence is the
    # unadapted model against itself, no gain.
    first = 0 if bool((held >= 2).any()) else n
    adapted = []
    with torch.no_grad():
        for start in range(first, n, per):
            sl = slice(start, start + per)
            x, y, m = cross_validation_sets(xs[sl], ys[sl], ms[sl], folds)
            queries = xs[sl].unsqueeze(1).expand(-1, v, *xs.shape[1:]).reshape(-1, *xs.shape[1:])
            out = fit_predict(x, y, m, queries).reshape(-1, v, k, ys.shape[-1])  # [n', V, K, C]
            adapted.append(out[:, fold, torch.arange(k)])  # item j scored by the model without fold(j)
        adapted_logits = torch.cat(adapted) if adapted else unadapted_logits
        denom = held.clamp(min=1.0)
        adapted_items = item_loss(adapted_logits, ys, pos_weight)
        unadapted_items = item_loss(unadapted_logits, ys, pos_weight)
        adapted_loss = (adapted_items * weight).sum(-1) / denom
        unadapted_loss = (unadapted_items * weight).sum(-1) / denom
        gains = unadapted_items - adapted_items
        mean_gain = (unadapted_loss - adapted_loss).unsqueeze(-1)
        variance = (((gains - mean_gain) ** 2) * weight).sum(-1) / (held - 1).clamp(min=1.0)
        gain_se = torch.where(held >= 2, (variance / denom).sqrt(), torch.zeros_like(held))
    return HeldOutEvidence(adapted_loss, unadapted_loss, held, gain_se)


def adapt_kept(keep: torch.Tensor, adapt: Callable[[torch.Tensor], dict[str, torch.Tensor]],
               unadapted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Batched states [N, ...]: ``adapt(rows)`` (the states of the listeners at index ``rows``)
    where ``keep``, ``unadapted`` elsewhere. The gate decides before anything is adapted, so
    the listeners it rejects (every one at K = 1, most where nobody differs) cost no
    adaptation; each listener's adaptation is its own, so adapting a subset changes none."""
    rows = torch.nonzero(keep).squeeze(1)
    states = {name: u.expand(len(keep), *u.shape[1:]).clone() for name, u in unadapted.items()}
    if len(rows):
        for name, value in adapt(rows).items():
            states[name][rows] = value
    return states


def choose(keep: torch.Tensor, adapted: Sequence[T], unadapted: Sequence[T]) -> list[T]:
    """Per listener, the adapted model where ``keep`` and the unadapted one elsewhere."""
    return [a if bool(k) else u for k, a, u in zip(keep.tolist(), adapted, unadapted, strict=True)]
