"""The one functional meta-learning core (DESIGN §3, issue 3).

``maml``, ``meta-perser`` and ``finetune`` adapt the shared :class:`~perserbench.head.EmotionHead`
with the same inner loop, written once here (:func:`inner_loop`): parameters are a dict of
tensors, inner gradients come from :func:`torch.func.grad`, and listeners are processed
together with :func:`torch.func.vmap` — a meta-batch of meta-train listeners during
meta-training (:func:`meta_loss`) and all test listeners of a (scenario, K) cell at evaluation
(:func:`adapt_many`). The dual form, which the methods run, does the same arithmetic without
``vmap``, with plain autograd on batched tensors (:func:`dual_meta_loss`, bit for bit
:func:`vmap_meta_loss`; :func:`_adapt_dual_batched`), because the transforms' per-op cost
dominates on the inner loop's tiny tensors. Outer gradients are ordinary autograd through the vmapped inner loops,
so second-order MAML is the default and first order is a flag (``first_order``).

Two interchangeable *forms* of the adapted head share that loop:

- :class:`PlainForm` materialises every listener's adapted parameters and evaluates the head
  with :func:`torch.func.functional_call`. It is the general form.
- :class:`DualForm` is the same arithmetic, exactly, but never materialises a listener's copy of
  the first layer's weight ``W`` [H, D]. The inner loop takes full-batch gradient steps on a
  fixed support set whose pooled features ``Z_s`` do not change during adaptation (the layer
  weighting is meta-learned, not adapted), so every update ``∂L/∂W = Δᵀ Z_s`` lies in the row
  space of ``Z_s`` and ``W_t = W_0 − A_tᵀ Z_s`` with ``A_t = Σ lr · Δ`` [n, H]. A forward pass
  is then ``z W_0ᵀ − (z Z_sᵀ) A_t + b``. With 768-d features and ~10 support items that is
  ~70× less memory traffic per listener and step, which is what makes batching pay on a CPU:
  with materialised weights the work is memory-bound and vmap cannot beat a Python loop.

Both forms are checked against a plain per-listener ``torch.autograd.grad`` loop
(:mod:`perserbench.bench`) in ``tests/test_metalearn.py``. Dropout is off inside these loops
(the head runs in eval mode): random masks would make the inner loop on a handful of support
items noisy and the batched and reference computations incomparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.head import EmotionHead, pool_features
from perserbench.method import FixedProbabilities
from perserbench.no_harm import FOLDS, adapt_kept, held_out_evidence

Params = dict[str, torch.Tensor]

# The parameters a listener's inner loop adapts. ``layer_logits`` (the upstream layer
# weighting) is meta-learned in the outer loop only: it describes the upstream, not the
# listener, and keeping it fixed during adaptation is what makes the dual form exact.
INNER_PARAMS = ("hidden.weight", "hidden.bias", "out.weight", "out.bias")

# What the inner loop of a combined-set episode adapts on (see :class:`EpisodeSampler`).
COMBINED_INNER = ("support", "all")


# --------------------------------------------------------------------------- parameters


def meta_parameters(head: EmotionHead) -> Params:
    """The head's parameters as a dict of fresh leaf tensors (meta-parameters to optimise);
    ``layer_logits`` keeps the head's ``requires_grad`` (False when layer weights are off)."""
    return {name: p.detach().clone().requires_grad_(p.requires_grad) for name, p in head.named_parameters()}


def head_buffers(head: EmotionHead) -> Params:
    return {name: b.detach() for name, b in head.named_buffers()}


def load_meta_parameters(head: EmotionHead, meta: Params) -> EmotionHead:
    """Copy meta-parameters back into ``head`` (so a meta-trained init is an ordinary module)."""
    with torch.no_grad():
        for name, p in head.named_parameters():
            p.copy_(meta[name])
    return head


def inner_learning_rates(steps: int, lr: float, learnable: bool) -> Params:
    """One learning rate per adapted parameter tensor ("layer") and inner step, as in MAML++;
    with ``learnable=False`` they are constants and the inner loop is plain MAML's."""
    return {name: torch.full((steps,), float(lr), requires_grad=learnable) for name in INNER_PARAMS}


def project_learning_rates(lrs: Params) -> None:
    """Clip learnable inner learning rates at 0 after an outer step (projected gradient descent
    onto lr ≥ 0). A negative lr would make the inner loop *ascend* the support loss, which is
    not adaptation. Projection rather than a softplus parametrisation because it changes
    nothing while every lr is positive (meta-gradients and Adam's steps are exactly those of
    the unconstrained learner, whose defaults were measured), and it can reach exactly 0 —
    "do not adapt this layer at this step" — which a softplus only approaches. Fixed lrs
    (vanilla MAML) are untouched."""
    with torch.no_grad():
        for lr in lrs.values():
            if lr.requires_grad:
                lr.clamp_(min=0.0)


def transform_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Per-item class-balanced BCE with logits written op for op as the formula that
    :mod:`torch.func` substitutes for ``F.binary_cross_entropy_with_logits`` inside any transform
    (PyTorch's ``binary_cross_entropy_with_logits_hack``). Why: eager PyTorch computes the same
    value with a fused ``log_sigmoid`` kernel whose backward rounds differently, so a loss meant to
    reproduce the vmapped inner loop's floats outside ``vmap`` (:func:`dual_meta_loss`) must use
    the formula the transform used, not the eager kernel."""
    max_val = (-logits).clamp_min(0)
    log_weight = (pos_weight - 1).mul(y).add_(1)
    softplus = (-max_val).exp_().add((-logits - max_val).exp_()).log_().add_(max_val)
    return (1 - y).mul(logits).add(log_weight.mul(softplus))


def masked_bce(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor,
               as_transform: bool = False) -> torch.Tensor:
    """Class-balanced BCE (:func:`perserbench.head.balanced_bce`) over the real rows of a padded set:
    padded rows (``mask`` 0) contribute nothing, so listeners with fewer items than the batch's
    set size can share one tensor. With a leading batch dimension it returns one loss per
    listener (the batched adaptation of :func:`adapt_states` sums them). ``as_transform``: the
    per-item loss as computed inside a ``torch.func`` transform (:func:`transform_bce`)."""
    if as_transform:
        per_item = transform_bce(logits, y, pos_weight)
    else:
        per_item = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight, reduction="none")
    return (per_item * mask.unsqueeze(-1)).sum(dim=(-2, -1)) / (mask.sum(dim=-1).clamp(min=1.0) * y.shape[-1])


# --------------------------------------------------------------------------- forms


class Form(Protocol):
    """How adapted parameters are represented; see the module docstring. ``ctx`` holds what
    stays fixed during one listener's adaptation, ``local`` what the inner loop updates."""

    name: str

    def start(self, meta: Params, xs: torch.Tensor, first_order: bool) -> tuple[Params, Params]: ...
    def free(self, local: Params) -> Params: ...
    def support_logits(self, meta: Params, ctx: Params, local: Params, free: Params) -> torch.Tensor: ...
    def update(self, local: Params, grads: Params, lrs: Params, meta: Params, pull: float) -> Params: ...
    def prepare(self, meta: Params, ctx: Params, x: torch.Tensor) -> Params: ...
    def logits(self, meta: Params, ctx: Params, local: Params, prep: Params) -> torch.Tensor: ...
    def state(self, ctx: Params, local: Params) -> Params: ...
    def predict_logits(self, meta: Params, state: Params, x: torch.Tensor) -> torch.Tensor: ...


class PlainForm:
    """Materialised adapted parameters, evaluated with ``functional_call`` on the head."""

    name = "functional_call"

    def __init__(self, head: EmotionHead) -> None:
        self.head = head.eval()
        self.buffers = head_buffers(head)

    def _call(self, meta: Params, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.head, {**self.buffers, "layer_logits": meta["layer_logits"], **params}, (x,))

    def start(self, meta: Params, xs: torch.Tensor, first_order: bool) -> tuple[Params, Params]:
        return {"xs": xs}, {k: meta[k] for k in INNER_PARAMS}

    def free(self, local: Params) -> Params:
        return local

    def support_logits(self, meta: Params, ctx: Params, local: Params, free: Params) -> torch.Tensor:
        return self._call(meta, free, ctx["xs"])

    def update(self, local: Params, grads: Params, lrs: Params, meta: Params, pull: float) -> Params:
        return {k: local[k] - lrs[k] * _pulled(grads[k], local[k], meta[k], pull) for k in INNER_PARAMS}

    def prepare(self, meta: Params, ctx: Params, x: torch.Tensor) -> Params:
        return {"x": x}

    def logits(self, meta: Params, ctx: Params, local: Params, prep: Params) -> torch.Tensor:
        return self._call(meta, local, prep["x"])

    def state(self, ctx: Params, local: Params) -> Params:
        return dict(local)

    def predict_logits(self, meta: Params, state: Params, x: torch.Tensor) -> torch.Tensor:
        return self._call(meta, state, x)


class DualForm:
    """The first layer's adapted weight kept as ``W_0 − Aᵀ Z_c`` (exact; see module docstring).

    ``Z_c`` is the support's pooled features, detached in first-order mode exactly where the
    materialised form's detached gradient ``Δᵀ Z_s`` would be. The gradient with respect to
    the support's hidden pre-activations (``Δ``) is taken through a zero offset ``E`` that
    stands in for ``hidden.weight`` in the gradient dict.
    """

    name = "dual"

    def __init__(self, head: EmotionHead) -> None:
        self.head = head.eval()
        self.buffers = head_buffers(head)

    def _pool(self, meta: Params, x: torch.Tensor, lean: bool = False) -> torch.Tensor:
        return pool_features(x, self.buffers["mean"], self.buffers["std"], meta["layer_logits"], lean)

    def start(self, meta: Params, xs: torch.Tensor, first_order: bool,
              lean: bool = False) -> tuple[Params, Params]:
        zs = self._pool(meta, xs, lean)
        zc = zs.detach() if first_order else zs
        h0 = F.linear(zs, meta["hidden.weight"])
        ctx = {"zc": zc, "h0": h0, "gram": zs @ zc.transpose(-1, -2)}
        local = {"A": torch.zeros_like(h0), **{k: meta[k] for k in INNER_PARAMS[1:]}}
        return ctx, local

    def free(self, local: Params) -> Params:
        return {"hidden.weight": torch.zeros_like(local["A"]),
                **{k: local[k] for k in INNER_PARAMS[1:]}}

    @staticmethod
    def _head(h0: torch.Tensor, gram: torch.Tensor, A: torch.Tensor, params: Params) -> torch.Tensor:
        # Written with matmul and unsqueeze(-2) rather than F.linear so that the same code
        # runs on one listener (inside vmap) and on a batch of listeners with batched
        # parameters (the plain-autograd adaptation in :func:`adapt_states`).
        hidden = h0 - gram @ A + params["hidden.bias"].unsqueeze(-2)
        return torch.relu(hidden) @ params["out.weight"].transpose(-1, -2) + params["out.bias"].unsqueeze(-2)

    def support_logits(self, meta: Params, ctx: Params, local: Params, free: Params) -> torch.Tensor:
        return self._head(ctx["h0"] + free["hidden.weight"], ctx["gram"], local["A"], free)

    def update(self, local: Params, grads: Params, lrs: Params, meta: Params, pull: float) -> Params:
        # W_t − W_0 = −A_tᵀ Z_c, so the pull's gradient pull·(W_t − W_0) is −pull·A_tᵀ Z_c: still
        # in the row space of Z_c, and the step on A is A + lr·(Δ − pull·A) (exact, not a proxy).
        delta = grads["hidden.weight"] - pull * local["A"] if pull else grads["hidden.weight"]
        out = {"A": local["A"] + lrs["hidden.weight"] * delta}
        out.update({k: local[k] - lrs[k] * _pulled(grads[k], local[k], meta[k], pull) for k in INNER_PARAMS[1:]})
        return out

    def prepare(self, meta: Params, ctx: Params, x: torch.Tensor, lean: bool = False) -> Params:
        z = self._pool(meta, x, lean)
        return {"h0": F.linear(z, meta["hidden.weight"]), "gram": z @ ctx["zc"].transpose(-1, -2)}

    def logits(self, meta: Params, ctx: Params, local: Params, prep: Params) -> torch.Tensor:
        return self._head(prep["h0"], prep["gram"], local["A"], local)

    def state(self, ctx: Params, local: Params) -> Params:
        return {**local, "zc": ctx["zc"]}

    def predict_logits(self, meta: Params, state: Params, x: torch.Tensor) -> torch.Tensor:
        return self.logits(meta, state, state, self.prepare(meta, state, x))


def _pulled(grad: torch.Tensor, value: torch.Tensor, anchor: torch.Tensor, pull: float) -> torch.Tensor:
    """The gradient of ``loss + pull/2·‖θ − θ_0‖²``; with ``pull`` 0 the loss's own gradient,
    untouched (so ``pull=0`` is bit-for-bit the unpulled loop)."""
    return grad + pull * (value - anchor) if pull else grad


def make_form(head: EmotionHead, dual: bool) -> Form:
    return DualForm(head) if dual else PlainForm(head)


# --------------------------------------------------------------------------- the inner loop


def inner_loop(form: Form, meta: Params, lrs: Params, xs: torch.Tensor, ys: torch.Tensor, ms: torch.Tensor,
               pos_weight: torch.Tensor, steps: int, first_order: bool,
               pull: float = 0.0) -> tuple[Params, list[Params]]:
    """Adapt to one listener's support (``xs`` [n, L, D], ``ys`` [n, C], mask ``ms`` [n]) with
    ``steps`` full-batch gradient steps; step ``t`` uses ``lrs[name][t]``. Returns the fixed
    context and the trajectory of adapted states (``steps + 1`` entries, the first = init).
    With ``first_order`` the inner gradients are constants to the outer loop (FOMAML).
    ``pull`` adds ``pull/2·‖θ − θ_meta‖²`` to the support loss (an L2 pull toward the init, so
    a few noisy support items cannot drag the head far from it); 0 = no pull."""
    ctx, local = form.start(meta, xs, first_order)
    trajectory = [local]
    for t in range(steps):
        def support_loss(free: Params, local: Params = local) -> torch.Tensor:
            return masked_bce(form.support_logits(meta, ctx, local, free), ys, ms, pos_weight)

        grads = grad(support_loss)(form.free(local))
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        local = form.update(local, grads, {k: lr[t] for k, lr in lrs.items()}, meta, pull)
        trajectory.append(local)
    return ctx, trajectory


def listener_meta_loss(form: Form, meta: Params, lrs: Params, pos_weight: torch.Tensor, steps: int,
                       first_order: bool, step_weights: Sequence[float], xs: torch.Tensor, ys: torch.Tensor,
                       ms: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor, mq: torch.Tensor) -> torch.Tensor:
    """One listener's outer loss: query loss after the inner loop, or (multi-step loss) the
    ``step_weights``-weighted sum of query losses after every inner step."""
    ctx, trajectory = inner_loop(form, meta, lrs, xs, ys, ms, pos_weight, steps, first_order)
    prep = form.prepare(meta, ctx, xq)
    if steps == 0:
        return masked_bce(form.logits(meta, ctx, trajectory[0], prep), yq, mq, pos_weight)
    total = xq.new_zeros(())
    for t, w in enumerate(step_weights, start=1):
        if w:
            total = total + w * masked_bce(form.logits(meta, ctx, trajectory[t], prep), yq, mq, pos_weight)
    return total


@dataclass(frozen=True)
class EpisodeBatch:
    """A meta-batch of B listener episodes, padded to equal set sizes (mask 0 = padding).

    ``support_rows``/``query_rows`` are row indices into the :class:`MetaTrainSet`'s
    annotations (−1 = padding): the inner loop adapts on the support, the outer loss is taken
    on the query. ``combined`` marks combined-set episodes, whose query is the listener's
    whole sampled set *including* the support items (see :class:`EpisodeSampler`)."""

    listeners: torch.Tensor
    support_rows: torch.Tensor
    query_rows: torch.Tensor
    xs: torch.Tensor
    ys: torch.Tensor
    ms: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    mq: torch.Tensor
    combined: bool = False


def meta_loss(form: Form, meta: Params, lrs: Params, batch: EpisodeBatch, pos_weight: torch.Tensor, steps: int,
              first_order: bool, step_weights: Sequence[float]) -> torch.Tensor:
    """Mean outer loss over a meta-batch, all listeners' inner loops run together: the dual form
    by :func:`dual_meta_loss` (the same floats as :func:`vmap_meta_loss`, faster), the
    materialised form by vmap."""
    if isinstance(form, DualForm):
        return dual_meta_loss(form, meta, lrs, batch, pos_weight, steps, first_order, step_weights)
    return vmap_meta_loss(form, meta, lrs, batch, pos_weight, steps, first_order, step_weights)


def vmap_meta_loss(form: Form, meta: Params, lrs: Params, batch: EpisodeBatch, pos_weight: torch.Tensor,
                   steps: int, first_order: bool, step_weights: Sequence[float]) -> torch.Tensor:
    """:func:`listener_meta_loss` vmapped over the meta-batch: the general path (any form)."""
    one = partial(listener_meta_loss, form, meta, lrs, pos_weight, steps, first_order, tuple(step_weights))
    return vmap(one)(batch.xs, batch.ys, batch.ms, batch.xq, batch.yq, batch.mq).mean()


def dual_meta_loss(form: DualForm, meta: Params, lrs: Params, batch: EpisodeBatch, pos_weight: torch.Tensor,
                   steps: int, first_order: bool, step_weights: Sequence[float]) -> torch.Tensor:
    """:func:`vmap_meta_loss` for the dual form with plain autograd on batched tensors, bit for bit.

    Why: the inner loop works on tiny tensors ([support, hidden]), so under ``vmap`` +
    ``grad`` its cost is mostly the transforms' per-op overhead; here each op runs once on the
    whole meta-batch. Listeners' support losses are independent, so the gradient of their *sum*
    with respect to listener ``i``'s parameters is listener ``i``'s own gradient, and
    ``create_graph`` keeps it differentiable for the second-order outer gradient.

    Three details keep every float equal to the vmapped loop's (``tests/test_metalearn.py``
    checks loss and meta-gradients with ``torch.equal``): every physical op is the one vmap's
    batching rules issue; the loss is :func:`transform_bce`, the formula ``torch.func`` runs
    instead of the eager BCE kernel; and at step 0 the meta-parameters enter *unbatched*, as
    the shared init does under vmap (one matmul over the stacked support, one broadcast add),
    while each listener's inner gradient is taken through a batched zero offset added after
    them (the dual form's ``E`` trick, exact: ``x + 0 == x``). Expanding the init to one copy
    per listener instead would reduce the outer gradient per listener and then over listeners,
    a different summation order (differences ~1e-7 relative). The pooling's backward is
    :func:`~perserbench.head.pool_features`' ``lean_backward`` (same floats, fewer ops)."""
    ctx, local = form.start(meta, batch.xs, first_order, lean=True)
    n = len(batch.xs)
    trajectory = [local]
    for t in range(steps):
        free = form.free(local)
        offsets = None
        if t == 0:
            offsets = {k: meta[k].new_zeros((n, *meta[k].shape)) for k in INNER_PARAMS[1:]}
            free = {"hidden.weight": free["hidden.weight"], **offsets}
            params = local
        elif first_order:
            free = {k: v.detach() for k, v in free.items()}
            params = free
        else:
            params = free
        free = {k: v if v.requires_grad else v.requires_grad_() for k, v in free.items()}
        logits = _dual_head(ctx["h0"] + free["hidden.weight"], ctx["gram"], local["A"], params, offsets)
        loss = masked_bce(logits, batch.ys, batch.ms, pos_weight, as_transform=True).sum()
        grads = dict(zip(free, torch.autograd.grad(loss, list(free.values()), create_graph=not first_order),
                         strict=True))
        local = form.update(local, grads, {k: lr[t] for k, lr in lrs.items()}, meta, 0.0)
        trajectory.append(local)
    prep = form.prepare(meta, ctx, batch.xq, lean=True)

    def query_loss(state: Params) -> torch.Tensor:
        return masked_bce(_dual_head(prep["h0"], prep["gram"], state["A"], state), batch.yq, batch.mq, pos_weight,
                          as_transform=True)

    if steps == 0:
        return query_loss(trajectory[0]).mean()
    total = batch.xq.new_zeros(())
    for t, w in enumerate(step_weights, start=1):
        if w:
            total = total + w * query_loss(trajectory[t])
    return total.mean()


def _dual_head(h0: torch.Tensor, gram: torch.Tensor, A: torch.Tensor, params: Params,
               offsets: Params | None = None) -> torch.Tensor:
    """:meth:`DualForm._head`, with each parameter's zero ``offsets`` (per listener) added right
    after it where given (see :func:`dual_meta_loss`)."""
    if offsets is None:
        return DualForm._head(h0, gram, A, params)
    hidden = h0 - gram @ A + params["hidden.bias"].unsqueeze(-2)
    hidden = hidden + offsets["hidden.bias"].unsqueeze(-2)
    act = torch.relu(hidden)
    logits = act @ params["out.weight"].transpose(-1, -2)
    logits = logits + act @ offsets["out.weight"].transpose(-1, -2)
    logits = logits + params["out.bias"].unsqueeze(-2)
    return logits + offsets["out.bias"].unsqueeze(-2)


def final_step_weights(steps: int) -> tuple[float, ...]:
    return tuple(1.0 if t == steps - 1 else 0.0 for t in range(steps))


def multi_step_weights(steps: int, progress: float) -> tuple[float, ...]:
    """MAML++ multi-step loss: uniform over inner steps at ``progress`` 0, annealed linearly to
    the final step alone at ``progress`` ≥ 1."""
    a = min(max(progress, 0.0), 1.0)
    return tuple((1.0 - a) / steps + (a if t == steps - 1 else 0.0) for t in range(steps))


# --------------------------------------------------------------------------- episode sampling


class EpisodeSampler:
    """Draws meta-batches of meta-train listener episodes from a :class:`MetaTrainSet`.

    Split mode (vanilla MAML): ``support`` items for the inner loop and up to ``query`` other
    items of the same listener for the outer loss — disjoint sets.

    Combined mode (meta-perser's combined-set meta-training): the listener's sampled set of
    ``support + query`` items is used by *both* loops — the inner loop adapts on its first
    ``support`` items and the outer loss is taken on the whole set, support items included, so
    every labelled item shapes the outer loss and none is spent on the inner loop alone.

    ``combined_inner="all"`` is the other reading of the paper ("all sampled training data in
    both inner and outer loops"): the inner loop adapts on the whole ``support + query`` set too,
    so inner = outer. It is offered for comparison, not as the default, for this reason:

    Why not inner = outer = the whole set: then the outer loss only measures how well the
    adapted head *fits the items it was adapted on*. Meta-training on that objective rewards
    an initialisation and inner learning rates that memorise whatever they are given — the
    learned lrs grew and meta-perser fell from 0.42 (consensus) to 0.35 macro-F1 at K=5 and
    0.22 at K=1 on validation listeners of ``synthetic`` (benchmarks/validate_defaults.py),
    because at test time the K support items are then overfitted. Keeping items the inner
    loop has not seen in the outer loss keeps the objective a generalisation objective."""

    def __init__(self, train: MetaTrainSet, support: int, query: int, combined: bool, meta_batch: int,
                 combined_inner: str = "support") -> None:
        if combined_inner not in COMBINED_INNER:
            raise ValueError(f"combined_inner={combined_inner!r}; choose one of {', '.join(COMBINED_INNER)}")
        self.train, self.support, self.query = train, support, query
        self.combined, self.meta_batch, self.combined_inner = combined, meta_batch, combined_inner
        rows_of = [torch.nonzero(train.listener == i).squeeze(1) for i in range(len(train.listeners))]
        need = 1 if combined else 2
        self.rows_of = [r for r in rows_of if len(r) >= need]
        self.listener_ids = [i for i, r in enumerate(rows_of) if len(r) >= need]
        if not self.rows_of:
            raise ValueError("no meta-train listener has enough labelled items for an episode")

    def sample(self, generator: torch.Generator) -> EpisodeBatch:
        pick = torch.randperm(len(self.rows_of), generator=generator)[: self.meta_batch]
        sup, qry = [], []
        for p in pick.tolist():
            rows = self.rows_of[p]
            rows = rows[torch.randperm(len(rows), generator=generator)]
            if self.combined:
                inner = self.support if self.combined_inner == "support" else self.support + self.query
                sup.append(rows[:inner])
                qry.append(rows[: self.support + self.query])
            else:
                n_s = min(self.support, len(rows) - 1)
                sup.append(rows[:n_s])
                qry.append(rows[n_s:n_s + self.query])
        support_rows, query_rows = _pad_rows(sup), _pad_rows(qry)
        xs, ys, ms = self._gather(support_rows)
        xq, yq, mq = self._gather(query_rows)
        listeners = torch.tensor([self.listener_ids[p] for p in pick.tolist()])
        return EpisodeBatch(listeners, support_rows, query_rows, xs, ys, ms, xq, yq, mq, combined=self.combined)

    def _gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = rows >= 0
        safe = rows.clamp(min=0)
        x = self.train.features[self.train.utterance[safe]]
        y = self.train.y[safe] * mask.unsqueeze(-1)
        return x, y, mask.float()


def _pad_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def pad_supports(supports: Sequence[LabelledItems]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack supports into ``x`` [N, K, L, D], ``y`` [N, K, C], ``mask`` [N, K] (equal K is
    the runner's case; unequal sizes are padded and masked)."""
    k = max(len(s) for s in supports)
    x0, y0 = supports[0].x, supports[0].y
    x = x0.new_zeros((len(supports), k, *x0.shape[1:]))
    y = y0.new_zeros((len(supports), k, y0.shape[1]))
    mask = torch.zeros(len(supports), k)
    for i, s in enumerate(supports):
        x[i, : len(s)], y[i, : len(s)], mask[i, : len(s)] = s.x, s.y, 1.0
    return x, y, mask


# --------------------------------------------------------------------------- evaluation-time adaptation


class AdaptedPredictor:
    """One test listener's adapted head (a slice of a batched adaptation)."""

    def __init__(self, form: Form, meta: Params, state: Params) -> None:
        self.form, self.meta, self.state = form, meta, state

    def predict_proba(self, items: Items) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(self.form.predict_logits(self.meta, self.state, items.x))


def adapt_states(form: Form, meta: Params, lrs: Params, xs: torch.Tensor, ys: torch.Tensor, ms: torch.Tensor,
                 pos_weight: torch.Tensor, steps: int, chunk: int = 256, pull: float = 0.0) -> Params:
    """Adapted states of N listeners at once, ``chunk`` at a time.

    The dual form is adapted with plain autograd on batched parameters: listeners' losses are
    independent, so the gradient of their *sum* with respect to listener ``i``'s parameters is
    listener ``i``'s own gradient. That is the same arithmetic as ``vmap(grad(...))`` with a
    fraction of its per-call overhead, which matters because the sealed runner adapts in small
    isolation units (a handful of listeners per call). The materialised form keeps vmap."""
    meta = {k: v.detach() for k, v in meta.items()}
    lrs = {k: v.detach() for k, v in lrs.items()}

    def one(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> Params:
        ctx, trajectory = inner_loop(form, meta, lrs, x, y, m, pos_weight, steps, first_order=True, pull=pull)
        return form.state(ctx, trajectory[-1])

    parts = []
    for start in range(0, len(xs), chunk):
        sl = slice(start, start + chunk)
        if isinstance(form, DualForm):
            parts.append(_adapt_dual_batched(form, meta, lrs, xs[sl], ys[sl], ms[sl], pos_weight, steps, pull))
        else:
            with torch.no_grad():
                parts.append(vmap(one)(xs[sl], ys[sl], ms[sl]))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _adapt_dual_batched(form: DualForm, meta: Params, lrs: Params, xs: torch.Tensor, ys: torch.Tensor,
                        ms: torch.Tensor, pos_weight: torch.Tensor, steps: int, pull: float = 0.0) -> Params:
    """:func:`inner_loop` (first order) for a batch of listeners with batched parameters."""
    with torch.no_grad():
        ctx, local = form.start(meta, xs, first_order=True)
        local = {k: v if k == "A" else v.expand(len(xs), *v.shape).clone() for k, v in local.items()}
    for t in range(steps):
        with torch.enable_grad():
            free = {k: v.detach().requires_grad_() for k, v in form.free(local).items()}
            loss = masked_bce(form.support_logits(meta, ctx, local, free), ys, ms, pos_weight).sum()
            grads = dict(zip(free, torch.autograd.grad(loss, list(free.values())), strict=True))
        with torch.no_grad():
            local = form.update(local, grads, {k: lr[t] for k, lr in lrs.items()}, meta, pull)
    return {k: v.detach() for k, v in form.state(ctx, local).items()}


def predict_states(form: Form, meta: Params, states: Params, x: torch.Tensor) -> torch.Tensor:
    """Logits [M, Q, C] of M adapted states (leading dimension M) on their own items ``x`` [M, Q, L, D]."""
    frozen = {k: v.detach() for k, v in meta.items()}
    with torch.no_grad():
        return vmap(lambda state, xi: form.predict_logits(frozen, state, xi))(states, x)


def guard_keep(form: Form, meta: Params, lrs: Params, xs: torch.Tensor, ys: torch.Tensor, ms: torch.Tensor,
               pos_weight: torch.Tensor, steps: int, reference_logits: torch.Tensor, chunk: int = 256,
               pull: float = 0.0, guard_z: float = 0.0, guard_folds: int = FOLDS) -> torch.Tensor:
    """Which listeners keep their adaptation [N]: the cross-validated check on each support
    (:mod:`perserbench.no_harm`) against the model a rejected listener falls back to, whose
    logits on the support items are ``reference_logits`` [N, K, C]."""
    def fit_predict(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
        return predict_states(form, meta, adapt_states(form, meta, lrs, x, y, m, pos_weight, steps, chunk, pull), xq)

    return held_out_evidence(fit_predict, reference_logits, xs, ys, ms, pos_weight, chunk, guard_folds).keep(guard_z)


def guarded_states(form: Form, meta: Params, lrs: Params, xs: torch.Tensor, ys: torch.Tensor, ms: torch.Tensor,
                   pos_weight: torch.Tensor, steps: int, chunk: int = 256, pull: float = 0.0,
                   guard_z: float = 0.0, guard_folds: int = FOLDS) -> Params:
    """:func:`adapt_states`, each listener kept at the init (0 steps) unless the cross-validated
    check on its own support (:mod:`perserbench.no_harm`) says the adaptation helps (at the
    one-sided level that ``guard_z`` states). Only the listeners the check keeps are adapted."""
    unadapted = adapt_states(form, meta, lrs, xs, ys, ms, pos_weight, 0, chunk)
    keep = guard_keep(form, meta, lrs, xs, ys, ms, pos_weight, steps, predict_states(form, meta, unadapted, xs),
                      chunk, pull, guard_z, guard_folds)
    return adapt_kept(keep, lambda rows: adapt_states(form, meta, lrs, xs[rows], ys[rows], ms[rows], pos_weight,
                                                      steps, chunk, pull), unadapted)


def adapt_many(form: Form, meta: Params, lrs: Params, supports: Sequence[LabelledItems],
               pos_weight: torch.Tensor, steps: int, chunk: int = 256, pull: float = 0.0,
               guard: bool = False, guard_z: float = 0.0, guard_folds: int = FOLDS,
               fallback: torch.nn.Module | None = None) -> list[AdaptedPredictor | FixedProbabilities]:
    """Adapt to every support set in one batched computation; one predictor per support.
    ``pull``: L2 pull toward the init (:func:`inner_loop`); ``guard``: the cross-validated
    do-no-harm gate (:func:`guarded_states`) with its evidence threshold ``guard_z`` and
    ``guard_folds`` folds. With a ``fallback`` model (e.g. the consensus model), a listener the
    gate rejects gets that model instead of the unadapted init, and the gate compares the
    adaptation with it."""
    if not supports:
        return []
    xs, ys, ms = pad_supports(supports)
    frozen = {k: v.detach() for k, v in meta.items()}
    if guard and fallback is not None:
        with torch.no_grad():
            reference = fallback(xs)
        keep = guard_keep(form, meta, lrs, xs, ys, ms, pos_weight, steps, reference, chunk, pull, guard_z,
                          guard_folds)
        rows = torch.nonzero(keep).squeeze(1)  # only the listeners the gate keeps are adapted
        states = adapt_states(form, meta, lrs, xs[rows], ys[rows], ms[rows], pos_weight, steps, chunk, pull) \
            if len(rows) else {}
        slot = {int(row): j for j, row in enumerate(rows)}
        return [AdaptedPredictor(form, frozen, {k: v[slot[i]] for k, v in states.items()}) if i in slot
                else FixedProbabilities(fallback) for i in range(len(supports))]
    if guard:
        states = guarded_states(form, meta, lrs, xs, ys, ms, pos_weight, steps, chunk, pull, guard_z, guard_folds)
    else:
        states = adapt_states(form, meta, lrs, xs, ys, ms, pos_weight, steps, chunk, pull)
    return [AdaptedPredictor(form, frozen, {k: v[i] for k, v in states.items()}) for i in range(len(supports))]


# --------------------------------------------------------------------------- meta-training


class MetaSettings(Protocol):
    """The config fields the meta-learner reads (``maml`` and ``meta-perser`` configs). Read
    with a default when absent, so older settings objects keep working: ``adapt_steps`` (-1),
    ``combined_inner`` ("support"), ``guard`` (False) and ``guard_folds`` (:data:`FOLDS`)."""

    meta_epochs: int
    steps_per_epoch: int
    meta_batch: int
    support: int
    query: int
    combined: bool
    inner_steps: int
    inner_lr: float
    outer_lr: float
    per_step_lrs: bool
    first_order_epochs: int
    multi_step_loss: bool
    multi_step_epochs: int
    dual: bool
    chunk: int


@dataclass(frozen=True)
class EpochLog:
    """What one meta-epoch did (kept in ``MetaLearner.history`` for tests and reports)."""

    epoch: int
    first_order: bool
    step_weights: tuple[float, ...]
    loss: float


class MetaLearner:
    """MAML-family meta-training of an :class:`EmotionHead` initialisation (and, with
    ``per_step_lrs``, of the inner learning rates), then batched adaptation."""

    def __init__(self, head: EmotionHead, pos_weight: torch.Tensor, settings: MetaSettings, seed: int) -> None:
        self.settings, self.seed = settings, seed
        self.head = head.eval()
        self.pos_weight = pos_weight
        self.form = make_form(head, settings.dual)
        self.meta = meta_parameters(head)
        self.lrs = inner_learning_rates(settings.inner_steps, settings.inner_lr, settings.per_step_lrs)
        self.history: list[EpochLog] = []

    def first_order_at(self, epoch: int) -> bool:
        """Derivative annealing: first-order meta-gradients for the first N epochs."""
        return epoch < self.settings.first_order_epochs

    def step_weights_at(self, epoch: int) -> tuple[float, ...]:
        s = self.settings
        if s.inner_steps == 0:
            return ()
        if not s.multi_step_loss:
            return final_step_weights(s.inner_steps)
        return multi_step_weights(s.inner_steps, epoch / max(s.multi_step_epochs, 1))

    def outer_loss(self, batch: EpisodeBatch, epoch: int) -> torch.Tensor:
        return meta_loss(self.form, self.meta, self.lrs, batch, self.pos_weight, self.settings.inner_steps,
                         self.first_order_at(epoch), self.step_weights_at(epoch))

    def trainable(self) -> list[torch.Tensor]:
        return [p for p in [*self.meta.values(), *self.lrs.values()] if p.requires_grad]

    def fit(self, train: MetaTrainSet) -> list[EpochLog]:
        s = self.settings
        sampler = EpisodeSampler(train, s.support, s.query, s.combined, s.meta_batch,
                                 getattr(s, "combined_inner", "support"))
        generator = torch.Generator().manual_seed(self.seed)
        optimizer = torch.optim.Adam(self.trainable(), lr=s.outer_lr)
        for epoch in range(s.meta_epochs):
            losses = []
            for _ in range(s.steps_per_epoch):
                batch = sampler.sample(generator)
                optimizer.zero_grad()
                loss = self.outer_loss(batch, epoch)
                loss.backward()
                optimizer.step()
                project_learning_rates(self.lrs)
                losses.append(loss.item())
            mean = sum(losses) / len(losses) if losses else math.nan
            self.history.append(EpochLog(epoch, self.first_order_at(epoch), self.step_weights_at(epoch), mean))
        load_meta_parameters(self.head, self.meta)
        return self.history

    def adapt_many(self, supports: Sequence[LabelledItems],
                   fallback: torch.nn.Module | None = None) -> list[AdaptedPredictor | FixedProbabilities]:
        steps = getattr(self.settings, "adapt_steps", -1)
        steps = self.settings.inner_steps if steps < 0 else steps
        return adapt_many(self.form, self.meta, self.lrs, supports, self.pos_weight, steps, self.settings.chunk,
                          guard=getattr(self.settings, "guard", False), guard_z=getattr(self.settings, "guard_z", 0.0),
                          guard_folds=getattr(self.settings, "guard_folds", FOLDS), fallback=fallback)
