"""Speed of the functional meta-learning core (``perserbench bench``) and its reference loop.

The reference is the textbook per-listener MAML loop: materialised parameters,
``torch.autograd.grad`` (``create_graph`` for second order), one listener after another, no
vmap. It computes the same mathematics as :mod:`perserbench.metalearn` and serves two
purposes: ``tests/test_metalearn.py`` checks the batched core's losses, meta-gradients and
adapted predictions against it, and the benchmark reports the batched core's speed as a ratio
to it, measured in the same process on the same data. learn2learn's ``MAML`` (an independent
implementation of the same loop) is a further column when it is installed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

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


def _learn2learn() -> tuple[object | None, str]:
    """learn2learn's module, or None and why not. (Its 0.2.0 sdist does not build on Python
    3.11+, and importing it needs gym and torchvision, so it is often absent.)"""
    try:
        import learn2learn  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install of its many dependencies
        return None, f"not importable ({type(exc).__name__}: {exc}); install the optional extra 'bench'"
    return learn2learn, ""


def run_bench(s: BenchSettings, progress: Callable[[str], None] | None = None) -> BenchReport:
    """Time meta-training outer steps (both orders) and test-listener adaptation for the
    reference loop, the batched core in both forms, and learn2learn when importable."""
    report = BenchReport(s)
    head, pos_weight, batch = _random_problem(s)
    weights = final_step_weights(s.inner_steps)
    l2l, why = _learn2learn()
    if l2l is None:
        report.skipped["learn2learn"] = why

    def say(text: str) -> None:
        if progress:
            progress(text)

    for order, first_order in (("second order", False), ("first order", True)):
        workload = f"meta-train, {order}"

        def outer_step(loss_fn: Callable[[Params, Params], torch.Tensor], meta: Params, lrs: Params,
                       optimizer: torch.optim.Optimizer) -> Callable[[], None]:
            def step() -> None:
                optimizer.zero_grad()
                loss_fn(meta, lrs).backward()
                optimizer.step()
            return step

        impls: dict[str, Callable[[Params, Params], torch.Tensor]] = {
            "loop": lambda m, r, fo=first_order: reference_meta_loss(head, m, r, batch, pos_weight, s.inner_steps,
                                                                     fo, weights),
            "vmap (functional_call)": lambda m, r, fo=first_order: meta_loss(make_form(head, False), m, r, batch,
                                                                             pos_weight, s.inner_steps, fo, weights),
            "vmap (dual)": lambda m, r, fo=first_order: meta_loss(make_form(head, True), m, r, batch, pos_weight,
                                                                  s.inner_steps, fo, weights),
        }
        for name, loss_fn in impls.items():
            say(f"{workload}: {name}")
            meta = meta_parameters(head)
            lrs = inner_learning_rates(s.inner_steps, 0.1, learnable=True)
            optimizer = torch.optim.Adam([*meta.values(), *lrs.values()], lr=1e-3)
            seconds = _median_seconds(outer_step(loss_fn, meta, lrs, optimizer), s.repeats)
            report.timings.append(Timing(workload, name, seconds, 1))
        if l2l is not None:
            say(f"{workload}: learn2learn")
            seconds = _median_seconds(_l2l_outer_step(l2l, head, batch, pos_weight, s.inner_steps, first_order),
                                      s.repeats)
            report.timings.append(Timing(workload, "learn2learn", seconds, 1, "fixed inner lr"))

    workload = f"adapt {s.listeners} test listeners (K={s.shots})"
    gen = torch.Generator().manual_seed(s.seed + 1)
    xs = torch.randn(s.listeners, s.shots, s.layers, s.dim, generator=gen)
    ys = (torch.rand(s.listeners, s.shots, s.classes, generator=gen) < 0.3).to(torch.get_default_dtype())
    ms = torch.ones(s.listeners, s.shots)
    meta = {k: v.detach() for k, v in meta_parameters(head).items()}
    lrs = inner_learning_rates(s.inner_steps, 0.1, learnable=False)
    adapt_impls: dict[str, Callable[[], object]] = {
        "loop": lambda: reference_adapt(head, meta, lrs, xs, ys, ms, pos_weight, s.inner_steps),
        "vmap (functional_call)": lambda: adapt_states(make_form(head, False), meta, lrs, xs, ys, ms, pos_weight,
                                                       s.inner_steps),
        "vmap (dual)": lambda: adapt_states(make_form(head, True), meta, lrs, xs, ys, ms, pos_weight, s.inner_steps),
    }
    for name, fn in adapt_impls.items():
        say(f"{workload}: {name}")
        report.timings.append(Timing(workload, name, _median_seconds(fn, max(3, s.repeats // 2)), s.listeners))
    if l2l is not None:
        say(f"{workload}: learn2learn")
        fn = _l2l_adapt(l2l, head, xs, ys, pos_weight, s.inner_steps)
        report.timings.append(Timing(workload, "learn2learn", _median_seconds(fn, max(3, s.repeats // 2)),
                                     s.listeners))
    return report


def _l2l_outer_step(l2l: object, head: EmotionHead, batch: EpisodeBatch, pos_weight: torch.Tensor, steps: int,
                    first_order: bool) -> Callable[[], None]:
    """learn2learn's MAML on the same head and data (its clone/adapt loop, one listener at a
    time); the layer weighting is frozen in its inner loop as in ours via requires_grad."""
    model = EmotionHead(head.layer_logits.numel(), head.hidden.in_features, head.out.out_features,
                        head.hidden.out_features)
    model.load_state_dict(head.state_dict())
    model.eval()
    maml = l2l.algorithms.MAML(model, lr=0.1, first_order=first_order)  # type: ignore[attr-defined]
    optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        total = torch.zeros(())
        for i in range(len(batch.xs)):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(balanced_bce(learner(batch.xs[i]), batch.ys[i], pos_weight))
            total = total + balanced_bce(learner(batch.xq[i]), batch.yq[i], pos_weight)
        (total / len(batch.xs)).backward()
        optimizer.step()

    return step


def _l2l_adapt(l2l: object, head: EmotionHead, xs: torch.Tensor, ys: torch.Tensor, pos_weight: torch.Tensor,
               steps: int) -> Callable[[], None]:
    maml = l2l.algorithms.MAML(head, lr=0.1, first_order=True)  # type: ignore[attr-defined]

    def adapt() -> None:
        for i in range(len(xs)):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(balanced_bce(learner(xs[i]), ys[i], pos_weight))

    return adapt
