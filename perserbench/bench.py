"""Speed of the functional meta-learning core (``perserbench bench``) and its reference loop.

The reference is the textbook per-listener MAML loop: materialised parameters,
``torch.autograd.grad`` (``create_graph`` for second order), one listener after another, no
vmap. It computes the same mathematics as :mod:`perserbench.metalearn` and serves two
purposes: ``tests/test_metalearn.py`` checks the batched core's losses, meta-gradients and
adapted predictions against it, and the benchmark reports the batched core's speed as a ratio
to it, measured in the same process on the same data. The core's column is ``batched (dual)``:
exactly the functions the methods call (:func:`~perserbench.metalearn.meta_loss`, which for
the dual form is :func:`~perserbench.metalearn.dual_meta_loss`, and
:func:`~perserbench.metalearn.adapt_states`); ``vmap (dual)`` is the same meta-loss through
``vmap`` (:func:`~perserbench.metalearn.vmap_meta_loss`, the same floats), to show what the
batched form buys. The libraries people use for this
(higher, torchopt, learn2learn: :mod:`perserbench.benchlibs`) are further columns on the
same mathematics when they are installed.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from perserbench.benchlibs import LIBRARIES, Library
from perserbench.head import EmotionHead, balanced_bce
from perserbench.metalearn import (
    INNER_PARAMS,
    EpisodeBatch,
    Params,
    adapt_states,
    final_step_weights,
    head_buffers,
    inner_learning_rates,
    make_form,
    meta_loss,
    meta_parameters,
    vmap_meta_loss,
)

# --------------------------------------------------------------------------- the reference loop


def _forward(head: EmotionHead, meta: Params, params: Params, x: torch.Tensor) -> torch.Tensor:
    return functional_call(head.eval(), {**head_buffers(head), "layer_logits": meta["layer_logits"], **params}, (x,))


def reference_listener_trajectory(head: EmotionHead, meta: Params, lrs: Params, xs: torch.Tensor, ys: torch.Tensor,
                                  pos_weight: torch.Tensor, steps: int, first_order: bool,
                                  pull: float = 0.0) -> list[Params]:
    """Inner loop for one listener's (unpadded) support with ``torch.autograd.grad``; ``pull``
    adds ``pull/2·‖θ − θ_meta‖²`` to the loss, written out as a loss term (not as the batched
    core's modified update) so the two are independent computations."""
    anchor = {k: meta[k].detach() for k in INNER_PARAMS}
    params = {k: meta[k] for k in INNER_PARAMS}
    if not any(p.requires_grad for p in params.values()):  # evaluation: a plain fine-tuning loop
        params = {k: p.clone().requires_grad_(True) for k, p in params.items()}
    trajectory = [params]
    for t in range(steps):
        loss = balanced_bce(_forward(head, meta, params, xs), ys, pos_weight)
        if pull:
            loss = loss + pull / 2 * sum(((params[k] - anchor[k]) ** 2).sum() for k in INNER_PARAMS)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        params = {k: params[k] - lrs[k][t] * g for k, g in zip(params, grads)}
        if not any(p.requires_grad for p in meta.values()):
            params = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        trajectory.append(params)
    return trajectory


def reference_meta_loss(head: EmotionHead, meta: Params, lrs: Params, batch: EpisodeBatch, pos_weight: torch.Tensor,
                        steps: int, first_order: bool, step_weights: Sequence[float]) -> torch.Tensor:
    """Mean outer loss of a meta-batch, one listener at a time (padding dropped, not masked)."""
    total = torch.zeros(())
    for i in range(len(batch.xs)):
        s, q = batch.ms[i] > 0, batch.mq[i] > 0
        trajectory = reference_listener_trajectory(head, meta, lrs, batch.xs[i][s], batch.ys[i][s], pos_weight,
                                                   steps, first_order)
        xq, yq = batch.xq[i][q], batch.yq[i][q]
        if steps == 0:
            total = total + balanced_bce(_forward(head, meta, trajectory[0], xq), yq, pos_weight)
        for t, w in enumerate(step_weights, start=1):
            if w:
                total = total + w * balanced_bce(_forward(head, meta, trajectory[t], xq), yq, pos_weight)
    return total / len(batch.xs)


def reference_adapt(head: EmotionHead, meta: Params, lrs: Params, xs: torch.Tensor, ys: torch.Tensor,
                    ms: torch.Tensor, pos_weight: torch.Tensor, steps: int, pull: float = 0.0) -> list[Params]:
    """Adapted parameters of each listener, one after another."""
    frozen = {k: v.detach() for k, v in meta.items()}
    lrs = {k: v.detach() for k, v in lrs.items()}
    out = []
    for i in range(len(xs)):
        m = ms[i] > 0
        last = reference_listener_trajectory(head, frozen, lrs, xs[i][m], ys[i][m], pos_weight, steps, True,
                                             pull)[-1]
        out.append({k: v.detach() for k, v in last.items()})
    return out


def reference_predict(head: EmotionHead, meta: Params, params: Params, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(_forward(head, meta, params, x))


# --------------------------------------------------------------------------- benchmark

INNER_LR = 0.1


@dataclass
class BenchSettings:
    """Defaults are the issue's targets: meta-batch 8, 5 inner steps, 768-d features, 100
    test listeners; 13 layers = a base-size SSL upstream's cached hidden states."""

    meta_batch: int = 8
    inner_steps: int = 5
    dim: int = 768
    layers: int = 13
    hidden: int = 256
    classes: int = 6
    support: int = 10
    query: int = 10
    listeners: int = 100
    shots: int = 10
    repeats: int = 7
    seed: int = 0


@dataclass
class Timing:
    """Per-call seconds (median over repeats) of one implementation on one workload."""

    workload: str
    implementation: str
    seconds: float
    per_call_units: int  # outer steps or adaptations per timed call
    note: str = ""

    @property
    def rate(self) -> float:
        return self.per_call_units / self.seconds


@dataclass
class BenchReport:
    settings: BenchSettings
    timings: list[Timing] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def rate(self, workload: str, implementation: str) -> float | None:
        for t in self.timings:
            if t.workload == workload and t.implementation == implementation:
                return t.rate
        return None


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocator, vmap tracing caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _random_problem(s: BenchSettings) -> tuple[EmotionHead, torch.Tensor, EpisodeBatch]:
    gen = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)
    head = EmotionHead(s.layers, s.dim, s.classes, s.hidden, dropout=0.2, layer_weights=True)
    head.set_standardizer(torch.randn(64, s.layers, s.dim, generator=gen))
    head.eval()

    def items(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.randn(s.meta_batch, n, s.layers, s.dim, generator=gen)
        y = (torch.rand(s.meta_batch, n, s.classes, generator=gen) < 0.3).to(torch.get_default_dtype())
        return x, y, torch.ones(s.meta_batch, n)

    xs, ys, ms = items(s.support)
    xq, yq, mq = items(s.query)
    rows = torch.zeros(s.meta_batch, 1, dtype=torch.long)
    batch = EpisodeBatch(torch.arange(s.meta_batch), rows, rows + 1, xs, ys, ms, xq, yq, mq)
    pos_weight = torch.full((s.classes,), 2.0)
    return head, pos_weight, batch


def _library_columns(report: BenchReport) -> list[Library]:
    """The libraries importable here; the others are recorded in ``report.skipped``."""
    out = []
    for lib in LIBRARIES:
        why = lib.available()
        if why is None:
            out.append(lib)
        else:
            report.skipped[lib.name] = why
    return out


def run_bench(s: BenchSettings, progress: Callable[[str], None] | None = None) -> BenchReport:
    """Time meta-training outer steps (both orders) and test-listener adaptation for the
    reference loop, the batched core in both forms and (second order and adaptation) every
    library of :mod:`perserbench.benchlibs` that is importable, in this one process.

    Every column computes the same thing: MAML with a fixed inner learning rate on the same
    head and data (the ``maml`` method's mathematics; ``meta-perser``'s learnable per-step
    rates are not something the libraries offer off the shelf), checked against the
    reference loop by ``tests/test_bench.py``.
    """
    report = BenchReport(s)
    head, pos_weight, batch = _random_problem(s)
    weights = final_step_weights(s.inner_steps)
    libraries = _library_columns(report)

    def say(text: str) -> None:
        if progress:
            progress(text)

    def timed_outer_step(meta_backward: Callable[[], None], params: list[torch.Tensor]) -> float:
        optimizer = torch.optim.Adam(params, lr=1e-3)

        def step() -> None:
            optimizer.zero_grad()
            meta_backward()
            optimizer.step()

        return _median_seconds(step, s.repeats)

    for order, first_order in (("second order", False), ("first order", True)):
        workload = f"meta-train, {order}"
        impls: dict[str, Callable[[Params, Params], torch.Tensor]] = {
            "loop": lambda m, r, fo=first_order: reference_meta_loss(head, m, r, batch, pos_weight, s.inner_steps,
                                                                     fo, weights),
            "vmap (functional_call)": lambda m, r, fo=first_order: meta_loss(make_form(head, False), m, r, batch,
                                                                             pos_weight, s.inner_steps, fo, weights),
            "vmap (dual)": lambda m, r, fo=first_order: vmap_meta_loss(make_form(head, True), m, r, batch,
                                                                       pos_weight, s.inner_steps, fo, weights),
            "batched (dual)": lambda m, r, fo=first_order: meta_loss(make_form(head, True), m, r, batch, pos_weight,
                                                                     s.inner_steps, fo, weights),
        }
        for name, loss_fn in impls.items():
            say(f"{workload}: {name}")
            meta = meta_parameters(head)
            lrs = inner_learning_rates(s.inner_steps, INNER_LR, learnable=False)
            seconds = timed_outer_step(lambda fn=loss_fn, m=meta, r=lrs: fn(m, r).backward(), list(meta.values()))
            report.timings.append(Timing(workload, name, seconds, 1))
        if first_order:
            continue  # the libraries' first-order modes differ from each other; compared at second order
        for lib in libraries:
            say(f"{workload}: {lib.name}")
            model = copy.deepcopy(head)
            seconds = timed_outer_step(
                lambda fn=lib.meta_backward, m=model: fn(m, batch, pos_weight, s.inner_steps, INNER_LR),
                list(model.parameters()))
            report.timings.append(Timing(workload, lib.name, seconds, 1))

    workload = f"adapt {s.listeners} test listeners (K={s.shots})"
    gen = torch.Generator().manual_seed(s.seed + 1)
    xs = torch.randn(s.listeners, s.shots, s.layers, s.dim, generator=gen)
    ys = (torch.rand(s.listeners, s.shots, s.classes, generator=gen) < 0.3).to(torch.get_default_dtype())
    ms = torch.ones(s.listeners, s.shots)
    meta = {k: v.detach() for k, v in meta_parameters(head).items()}
    lrs = inner_learning_rates(s.inner_steps, INNER_LR, learnable=False)
    adapt_impls: dict[str, Callable[[], object]] = {
        "loop": lambda: reference_adapt(head, meta, lrs, xs, ys, ms, pos_weight, s.inner_steps),
        "vmap (functional_call)": lambda: adapt_states(make_form(head, False), meta, lrs, xs, ys, ms, pos_weight,
                                                       s.inner_steps),
        "batched (dual)": lambda: adapt_states(make_form(head, True), meta, lrs, xs, ys, ms, pos_weight,
                                               s.inner_steps),
    }
    for lib in libraries:
        model = copy.deepcopy(head)
        adapt_impls[lib.name] = lambda fn=lib.adapt, m=model: fn(m, xs, ys, pos_weight, s.inner_steps, INNER_LR)
    for name, fn in adapt_impls.items():
        say(f"{workload}: {name}")
        report.timings.append(Timing(workload, name, _median_seconds(fn, max(3, s.repeats // 2)), s.listeners))
    return report
