"""The functional meta-learning core against the plain per-listener reference loop.

The reference (perserbench.bench: materialised parameters, torch.autograd.grad, one listener
after another, padding dropped rather than masked) computes the same mathematics; the
batched core must agree with it to 1e-5 in float32 for losses, meta-gradients (second and
first order, with learnable per-step lrs and the multi-step loss) and adapted predictions.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from perserbench.bench import (
    BenchSettings,
    _random_problem,
    reference_adapt,
    reference_meta_loss,
    reference_predict,
)
from perserbench.episodes import MetaTrainSet
from perserbench.head import pool_features
from perserbench.metalearn import (
    INNER_PARAMS,
    EpisodeSampler,
    MetaLearner,
    adapt_states,
    dual_meta_loss,
    final_step_weights,
    inner_learning_rates,
    make_form,
    meta_loss,
    meta_parameters,
    multi_step_weights,
    vmap_meta_loss,
)
from perserbench.tasks import load_task

TOL = 1e-5
STEPS = 3


@pytest.fixture
def problem():
    """A small random head and a meta-batch whose listeners have different real set sizes."""
    s = BenchSettings(meta_batch=4, inner_steps=STEPS, dim=24, layers=3, hidden=16, classes=4, support=6, query=7)
    head, _, batch = _random_problem(s)
    ms, mq = batch.ms.clone(), batch.mq.clone()
    ms[0, 4:] = 0  # listener 0 has 4 support items
    mq[2, 3:] = 0  # listener 2 has 3 query items
    return head, torch.tensor([1.0, 2.5, 4.0, 1.5]), dataclasses.replace(batch, ms=ms, mq=mq)


def grads_of(loss: torch.Tensor, meta: dict, lrs: dict) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, [*meta.values(), *lrs.values()]))


def fresh(head):
    return meta_parameters(head), inner_learning_rates(STEPS, 0.3, learnable=True)


@pytest.mark.parametrize("dual", [False, True], ids=["functional_call", "dual"])
@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
@pytest.mark.parametrize("multi_step", [False, True], ids=["last-step", "multi-step"])
def test_batched_meta_gradient_equals_reference_loop(problem, dual, first_order, multi_step):
    head, pos_weight, batch = problem
    weights = multi_step_weights(STEPS, 0.4) if multi_step else final_step_weights(STEPS)
    meta, lrs = fresh(head)
    ref = reference_meta_loss(head, meta, lrs, batch, pos_weight, STEPS, first_order, weights)
    ref_grads = grads_of(ref, meta, lrs)
    meta, lrs = fresh(head)
    got = meta_loss(make_form(head, dual), meta, lrs, batch, pos_weight, STEPS, first_order, weights)
    got_grads = grads_of(got, meta, lrs)
    assert abs(got.item() - ref.item()) < TOL
    assert max(g.abs().max().item() for g in ref_grads) > 1e-3  # a real gradient, not zeros
    for name, a, b in zip([*meta, *(f"lr:{k}" for k in lrs)], got_grads, ref_grads):
        assert torch.allclose(a, b, atol=TOL, rtol=0), f"{name}: max diff {(a - b).abs().max().item():.2e}"


@pytest.mark.parametrize("steps", [0, 1, STEPS])
@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
@pytest.mark.parametrize("multi_step", [False, True], ids=["last-step", "multi-step"])
def test_dual_meta_loss_is_the_vmapped_loop_bit_for_bit(problem, steps, first_order, multi_step):
    """The methods meta-train through :func:`dual_meta_loss`; it must give exactly the floats of
    the vmapped per-listener loop (so the committed board does not move), not just agree to a
    tolerance: loss and every meta-gradient (learnable per-step lrs included) with torch.equal."""
    head, pos_weight, batch = problem
    weights = multi_step_weights(steps, 0.4) if multi_step else final_step_weights(steps)
    out = []
    for fn in (vmap_meta_loss, dual_meta_loss):
        meta, lrs = fresh(head)
        loss = fn(make_form(head, True), meta, lrs, batch, pos_weight, steps, first_order, weights)
        out.append((loss, torch.autograd.grad(loss, [*meta.values(), *lrs.values()], allow_unused=True)))
    (loss_v, grads_v), (loss_d, grads_d) = out
    assert torch.equal(loss_v, loss_d)
    assert any(g is not None and g.abs().max() > 1e-4 for g in grads_v)
    for name, a, b in zip([*meta, *(f"lr:{k}" for k in lrs)], grads_v, grads_d):
        assert (a is None and b is None) or torch.equal(a, b), name


def test_lean_pooling_backward_is_autograds_bit_for_bit():
    """pool_features' hand-written backward (used by dual_meta_loss) gives autograd's floats."""
    gen = torch.Generator().manual_seed(5)
    x, mean = torch.randn(3, 4, 5, 16, generator=gen), torch.randn(5, 16, generator=gen)
    std, weight = torch.rand(5, 16, generator=gen) + 0.5, torch.randn(3, 4, 16, generator=gen)
    out = []
    for lean in (False, True):
        logits = torch.randn(5, generator=torch.Generator().manual_seed(6)).requires_grad_()
        pooled = pool_features(x, mean, std, logits, lean_backward=lean)
        out.append((pooled, torch.autograd.grad((pooled * weight).sum() + pooled.pow(2).sum(), logits)[0]))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert out[0][1].abs().max() > 1e-3


def test_first_and_second_order_meta_gradients_differ(problem):
    """Otherwise the equality tests above could not tell the two orders apart."""
    head, pos_weight, batch = problem
    out = {}
    for first_order in (False, True):
        meta, lrs = fresh(head)
        loss = meta_loss(make_form(head, True), meta, lrs, batch, pos_weight, STEPS, first_order,
                         final_step_weights(STEPS))
        out[first_order] = grads_of(loss, meta, lrs)
    assert max((a - b).abs().max().item() for a, b in zip(out[False], out[True])) > 1e-4


@pytest.mark.parametrize("dual", [False, True], ids=["functional_call", "dual"])
def test_batched_adaptation_equals_reference_loop(problem, dual):
    head, pos_weight, batch = problem
    meta, _ = fresh(head)
    lrs = inner_learning_rates(STEPS, 0.5, learnable=False)
    form = make_form(head, dual)
    states = adapt_states(form, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS, chunk=3)
    reference = reference_adapt(head, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS)
    frozen = {k: v.detach() for k, v in meta.items()}
    moved = 0.0
    for i, params in enumerate(reference):
        state = {k: v[i] for k, v in states.items()}
        got = torch.sigmoid(form.predict_logits(frozen, state, batch.xq[i])).detach()
        want = reference_predict(head, frozen, params, batch.xq[i])
        assert torch.allclose(got, want, atol=TOL, rtol=0)
        moved = max(moved, (want - reference_predict(head, frozen, {k: frozen[k] for k in INNER_PARAMS},
                                                     batch.xq[i])).abs().max().item())
    assert moved > 1e-3  # adaptation changed the predictions, so the comparison means something


@dataclasses.dataclass
class Settings:
    meta_epochs: int = 4
    steps_per_epoch: int = 2
    meta_batch: int = 3
    support: int = 4
    query: int = 5
    combined: bool = False
    inner_steps: int = STEPS
    inner_lr: float = 0.3
    outer_lr: float = 1e-2
    per_step_lrs: bool = True
    first_order_epochs: int = 2
    multi_step_loss: bool = False
    multi_step_epochs: int = 2
    dual: bool = True
    chunk: int = 16


@pytest.fixture
def toy_train(toy_task_file):
    task = load_task(toy_task_file)
    return MetaTrainSet(task, task.folds[0])


def toy_learner(train, settings, seed=0):
    from perserbench.head import head_for, positive_weights

    torch.manual_seed(seed)
    return MetaLearner(head_for(train, 16, 0.0, True), positive_weights(train.y), settings, seed)


def test_per_step_learning_rates_receive_gradients_and_change(toy_train):
    learner = toy_learner(toy_train, Settings())
    sampler = EpisodeSampler(toy_train, 4, 5, False, 3)
    loss = learner.outer_loss(sampler.sample(torch.Generator().manual_seed(0)), epoch=3)
    loss.backward()
    for name, lr in learner.lrs.items():
        assert lr.grad is not None and (lr.grad != 0).all(), name  # every layer and every step
    learner = toy_learner(toy_train, Settings())
    before = {k: v.detach().clone() for k, v in learner.lrs.items()}
    learner.fit(toy_train)
    for name in INNER_PARAMS:
        assert not torch.equal(learner.lrs[name].detach(), before[name]), name
        assert len(set(learner.lrs[name].tolist())) == STEPS  # each step learned its own value
    frozen = toy_learner(toy_train, Settings(per_step_lrs=False))
    frozen.fit(toy_train)
    assert all(torch.equal(frozen.lrs[k], before[k]) for k in INNER_PARAMS)


def test_derivative_annealing_switches_order_at_the_configured_epoch(toy_train, problem):
    learner = toy_learner(toy_train, Settings(meta_epochs=5, first_order_epochs=2))
    history = learner.fit(toy_train)
    assert [h.first_order for h in history] == [True, True, False, False, False]
    # ...and the order is what the outer loss actually differentiates: compare with the reference.
    head, pos_weight, batch = problem
    learner = MetaLearner(head, pos_weight, Settings(first_order_epochs=2), seed=0)
    for epoch, first_order in ((1, True), (2, False)):
        got = grads_of(learner.outer_loss(batch, epoch), learner.meta, learner.lrs)
        meta, lrs = fresh(head)
        want = grads_of(reference_meta_loss(head, meta, lrs, batch, pos_weight, STEPS, first_order,
                                            final_step_weights(STEPS)), meta, lrs)
        assert all(torch.allclose(a, b, atol=TOL, rtol=0) for a, b in zip(got, want)), epoch


def test_combined_set_feeds_the_same_items_to_inner_and_outer_loops(toy_train):
    gen = torch.Generator().manual_seed(3)
    combined = EpisodeSampler(toy_train, 4, 5, combined=True, meta_batch=3).sample(gen)
    assert combined.combined
    assert combined.ms.sum(1).tolist() == [4.0, 4.0, 4.0]  # the inner loop adapts on `support` items
    assert combined.mq.sum(1).tolist() == [9.0, 9.0, 9.0]  # the outer loss sees the whole combined set
    for s, q, who in zip(combined.support_rows, combined.query_rows, combined.listeners):
        inner, outer = set(s.tolist()), set(q.tolist())
        assert inner < outer  # every inner-loop item also shapes the outer loss...
        assert outer - inner  # ...and the outer loss also sees items the inner loop did not fit
        assert (toy_train.listener[q] == who).all()
    # the outer tensors are the gathered query rows (support items included, in the same order)
    assert torch.equal(combined.xq[:, :4], combined.xs) and torch.equal(combined.yq[:, :4], combined.ys)
    split = EpisodeSampler(toy_train, 4, 5, combined=False, meta_batch=3).sample(gen)
    assert not split.combined
    for s, q, who in zip(split.support_rows, split.query_rows, split.listeners):
        assert not set(s.tolist()) & set(q.tolist())
        rows = torch.cat([s, q])
        assert (toy_train.listener[rows] == who).all()  # every item is the sampled listener's own


def test_meta_perser_trains_on_combined_sets_and_maml_on_split_sets(toy_task_file, monkeypatch):
    from perserbench.registry import create_method

    seen: list = []
    original = EpisodeSampler.sample
    monkeypatch.setattr(EpisodeSampler, "sample", lambda self, g: seen.append(original(self, g)) or seen[-1])
    task = load_task(toy_task_file)
    small = {"meta_epochs": "1", "steps_per_epoch": "2", "inner_steps": "1"}
    create_method("meta-perser", small).meta_fit(MetaTrainSet(task, task.folds[0]))
    assert len(seen) == 2 and all(b.combined for b in seen)
    seen.clear()
    create_method("maml", small).meta_fit(MetaTrainSet(task, task.folds[0]))
    assert len(seen) == 2 and not any(b.combined for b in seen)


def test_sampler_is_deterministic_per_generator_seed(toy_train):
    sampler = EpisodeSampler(toy_train, 4, 5, combined=False, meta_batch=3)
    a = sampler.sample(torch.Generator().manual_seed(1))
    b = sampler.sample(torch.Generator().manual_seed(1))
    c = sampler.sample(torch.Generator().manual_seed(2))
    assert torch.equal(a.support_rows, b.support_rows) and torch.equal(a.query_rows, b.query_rows)
    assert not torch.equal(a.support_rows, c.support_rows)


def test_multi_step_loss_weights_anneal_from_uniform_to_last_step():
    assert multi_step_weights(4, 0.0) == pytest.approx((0.25, 0.25, 0.25, 0.25))
    assert multi_step_weights(4, 1.0) == pytest.approx((0.0, 0.0, 0.0, 1.0))
    mid = multi_step_weights(4, 0.5)
    assert sum(mid) == pytest.approx(1.0) and mid[0] == pytest.approx(0.125) and mid[-1] == pytest.approx(0.625)
    assert final_step_weights(3) == (0.0, 0.0, 1.0)


# --------------------------------------------------------------------------- issue 14: pull, guard, lrs ≥ 0


@pytest.mark.parametrize("dual", [False, True], ids=["functional_call", "dual"])
def test_pulled_adaptation_equals_reference_loop_with_the_pull_in_the_loss(problem, dual):
    """The batched core applies the L2 pull as a modified update (in the dual form on the
    low-rank A); the reference differentiates ``loss + pull/2·‖θ − θ_0‖²`` with autograd."""
    head, pos_weight, batch = problem
    meta, _ = fresh(head)
    frozen = {k: v.detach() for k, v in meta.items()}
    lrs = inner_learning_rates(STEPS, 0.5, learnable=False)
    form = make_form(head, dual)
    pulled = adapt_states(form, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS, chunk=3, pull=0.8)
    plain = adapt_states(form, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS, chunk=3)
    reference = reference_adapt(head, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS, pull=0.8)
    moved = 0.0
    for i, params in enumerate(reference):
        got = torch.sigmoid(form.predict_logits(frozen, {k: v[i] for k, v in pulled.items()}, batch.xq[i])).detach()
        assert torch.allclose(got, reference_predict(head, frozen, params, batch.xq[i]), atol=TOL, rtol=0)
        unpulled = torch.sigmoid(form.predict_logits(frozen, {k: v[i] for k, v in plain.items()}, batch.xq[i]))
        moved = max(moved, (got - unpulled.detach()).abs().max().item())
    assert moved > 1e-4  # the pull changed the adapted heads, so the comparison means something
    zero = adapt_states(form, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS, chunk=3, pull=0.0)
    assert all(torch.equal(zero[k], plain[k]) for k in plain)  # pull=0 is today's loop, bit for bit


@pytest.mark.parametrize("dual", [False, True], ids=["functional_call", "dual"])
def test_guarded_adaptation_equals_a_per_listener_cross_validation_loop(problem, dual):
    """The batched gate against the textbook loop: for each listener, split the real support
    slots into 3 folds (slot j in fold j mod 3), adapt on the other folds with the reference
    inner loop, score each held-out item against the unadapted init, keep the adaptation only
    if its mean held-out loss is lower (z = 0)."""
    from perserbench.metalearn import guarded_states
    from perserbench.no_harm import item_loss

    head, pos_weight, batch = problem
    meta, _ = fresh(head)
    frozen = {k: v.detach() for k, v in meta.items()}
    init = {k: frozen[k] for k in INNER_PARAMS}
    form = make_form(head, dual)
    decisions = set()
    for lr in (0.5, 30.0):  # a sane step and a harmful one, so both decisions occur
        lrs = inner_learning_rates(STEPS, lr, learnable=False)
        states = guarded_states(form, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS, chunk=5,
                                guard_folds=3)
        adapted = reference_adapt(head, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS)
        for i in range(len(batch.xs)):
            real = torch.nonzero(batch.ms[i] > 0).squeeze(1)
            gain = 0.0
            for fold in range(3):
                held, rest = real[real % 3 == fold], real[real % 3 != fold]
                params = reference_adapt(head, meta, lrs, batch.xs[i][rest][None], batch.ys[i][rest][None],
                                         torch.ones(1, len(rest)), pos_weight, STEPS)[0]
                x, y = batch.xs[i][held], batch.ys[i][held]
                with torch.no_grad():
                    gain += (item_loss(head_logits(head, frozen, init, x), y, pos_weight)
                             - item_loss(head_logits(head, frozen, params, x), y, pos_weight)).sum().item()
            keep = gain > 0
            decisions.add(keep)
            want = reference_predict(head, frozen, adapted[i] if keep else init, batch.xq[i])
            got = torch.sigmoid(form.predict_logits(frozen, {k: v[i] for k, v in states.items()}, batch.xq[i]))
            assert torch.allclose(got.detach(), want, atol=TOL, rtol=0), (lr, i, keep)
    assert decisions == {True, False}


def test_a_fallback_model_is_what_the_gate_compares_with_and_what_a_rejected_listener_gets(problem):
    """``fallback`` (maml/meta-perser ``fallback=consensus``): the leave-one-out gain is taken
    against the fallback model's loss, a rejected listener predicts exactly as the fallback
    model, a kept one as its adapted head; a one-item support has nothing to leave out and
    always falls back."""
    import copy

    from perserbench.episodes import Items, LabelledItems
    from perserbench.metalearn import adapt_many
    from perserbench.method import FixedProbabilities
    from perserbench.no_harm import item_loss

    head, pos_weight, batch = problem
    fallback = copy.deepcopy(head).eval()
    with torch.no_grad():
        for p in fallback.parameters():
            p.add_(0.3 * torch.randn_like(p))
    meta, _ = fresh(head)
    frozen = {k: v.detach() for k, v in meta.items()}
    form = make_form(head, True)
    supports = [LabelledItems(batch.xs[i][batch.ms[i] > 0], batch.ys[i][batch.ms[i] > 0]) for i in range(len(batch.xs))]
    decisions = set()
    for lr in (0.5, 30.0):
        lrs = inner_learning_rates(STEPS, lr, learnable=False)
        predictors = adapt_many(form, meta, lrs, supports, pos_weight, STEPS, guard=True, fallback=fallback)
        adapted = reference_adapt(head, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS)
        for i, support in enumerate(supports):
            gain = 0.0
            for j in range(len(support.x)):
                rest = [r for r in range(len(support.x)) if r != j]
                params = reference_adapt(head, meta, lrs, support.x[rest][None], support.y[rest][None],
                                         torch.ones(1, len(rest)), pos_weight, STEPS)[0]
                x, y = support.x[j:j + 1], support.y[j:j + 1]
                with torch.no_grad():
                    gain += (item_loss(fallback(x), y, pos_weight)
                             - item_loss(head_logits(head, frozen, params, x), y, pos_weight)).item()
            keep = gain > 0
            decisions.add(keep)
            got = predictors[i].predict_proba(Items(batch.xq[i]))
            if keep:
                want = reference_predict(head, frozen, adapted[i], batch.xq[i])
                assert torch.allclose(got, want, atol=TOL, rtol=0), (lr, i)
            else:
                assert isinstance(predictors[i], FixedProbabilities)
                assert torch.equal(got, torch.sigmoid(fallback(batch.xq[i]).detach())), (lr, i)
    assert decisions == {True, False}
    lone = adapt_many(form, meta, inner_learning_rates(STEPS, 0.5, learnable=False), [supports[0].__class__(
        supports[0].x[:1], supports[0].y[:1])], pos_weight, STEPS, guard=True, fallback=fallback)
    assert isinstance(lone[0], FixedProbabilities)


@pytest.mark.parametrize("with_fallback", [False, True], ids=["init", "fallback"])
def test_the_gate_adapts_only_the_listeners_it_keeps(problem, monkeypatch, with_fallback):
    """The gate decides first, then adapts: the listeners it rejects cost no adaptation, and a
    one-item support (nothing to hold out) costs none at all. Every ``adapt_states`` call is
    recorded as (rows, steps): the full adaptation (steps > 0) of N listeners happens only for
    the rows the gate keeps, and the predictions equal adapting everyone and then choosing."""
    import copy

    import perserbench.metalearn as ml
    from perserbench.episodes import Items, LabelledItems
    from perserbench.method import FixedProbabilities

    head, pos_weight, batch = problem
    fallback = copy.deepcopy(head).eval() if with_fallback else None
    meta, _ = fresh(head)
    form = make_form(head, True)
    lrs = inner_learning_rates(STEPS, 1.0, learnable=False)  # on this problem it keeps some listeners, not all
    supports = [LabelledItems(batch.xs[i][batch.ms[i] > 0], batch.ys[i][batch.ms[i] > 0]) for i in range(len(batch.xs))]
    original, calls = ml.adapt_states, []

    def recorded(form_, meta_, lrs_, xs, ys, ms, pos_weight_, steps, *args, **kwargs):
        calls.append((len(xs), steps))
        return original(form_, meta_, lrs_, xs, ys, ms, pos_weight_, steps, *args, **kwargs)

    monkeypatch.setattr(ml, "adapt_states", recorded)
    predictors = ml.adapt_many(form, meta, lrs, supports, pos_weight, STEPS, guard=True, guard_folds=3,
                               fallback=fallback)
    n = len(supports)
    kept = [not isinstance(p, FixedProbabilities) for p in predictors] if with_fallback else None
    everyone = original(form, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, STEPS)
    unadapted = original(form, meta, lrs, batch.xs, batch.ys, batch.ms, pos_weight, 0)
    frozen = {k: v.detach() for k, v in meta.items()}
    if not with_fallback:  # a rejected listener keeps the init: tell the two apart by prediction
        kept = []
        for i, p in enumerate(predictors):
            got = p.predict_proba(Items(batch.xq[i]))
            init = torch.sigmoid(form.predict_logits(frozen, {k: v[i] for k, v in unadapted.items()}, batch.xq[i]))
            kept.append(not torch.allclose(got, init, atol=TOL, rtol=0))
    assert 0 < sum(kept) < n
    main = [rows for rows, steps in calls if steps > 0 and rows <= n]  # the cross-validation fits have N·3 rows
    assert main == [sum(kept)]
    for i, p in enumerate(predictors):
        if kept[i]:
            want = torch.sigmoid(form.predict_logits(frozen, {k: v[i] for k, v in everyone.items()}, batch.xq[i]))
            assert torch.allclose(p.predict_proba(Items(batch.xq[i])), want, atol=TOL, rtol=0)
    calls.clear()
    ml.adapt_many(form, meta, lrs, [LabelledItems(s.x[:1], s.y[:1]) for s in supports], pos_weight, STEPS,
                  guard=True, guard_folds=3, fallback=fallback)
    assert [steps for _, steps in calls] == ([] if with_fallback else [0])  # K = 1: nothing is fitted


def head_logits(head, meta, params, x):
    from perserbench.bench import _forward

    return _forward(head, meta, params, x)


def test_learned_inner_learning_rates_stay_non_negative(toy_train, monkeypatch):
    """An outer objective that rewards lowering every lr (its meta-gradient is +1 on each), with
    Adam steps of 0.05 from lrs of 0.1: after three steps they would be −0.05; the projection
    stops them at 0. Without it (patched out) they go negative, so the check can fail."""
    import perserbench.metalearn as ml

    def lower_every_lr(learner):
        return lambda batch, epoch: sum(lr.sum() for lr in learner.lrs.values()) + 0 * learner.meta["out.bias"].sum()

    settings = Settings(inner_lr=0.1, outer_lr=0.05, meta_epochs=1, steps_per_epoch=3)
    learner = toy_learner(toy_train, settings)
    learner.outer_loss = lower_every_lr(learner)
    learner.fit(toy_train)
    assert all(torch.equal(lr.detach(), torch.zeros(STEPS)) for lr in learner.lrs.values())
    monkeypatch.setattr(ml, "project_learning_rates", lambda lrs: None)
    unprojected = toy_learner(toy_train, settings)
    unprojected.outer_loss = lower_every_lr(unprojected)
    unprojected.fit(toy_train)
    assert all((lr.detach() < -0.01).all() for lr in unprojected.lrs.values())
    fixed = toy_learner(toy_train, dataclasses.replace(settings, per_step_lrs=False, inner_lr=0.3))
    fixed.fit(toy_train)
    assert all(torch.equal(lr, torch.full((STEPS,), 0.3)) for lr in fixed.lrs.values())  # vanilla: untouched


def test_combined_inner_all_adapts_on_the_whole_combined_set(toy_train):
    gen = torch.Generator().manual_seed(3)
    batch = EpisodeSampler(toy_train, 4, 5, combined=True, meta_batch=3, combined_inner="all").sample(gen)
    assert torch.equal(batch.support_rows, batch.query_rows)  # inner = outer
    assert batch.ms.sum(1).tolist() == [9.0, 9.0, 9.0]
    default = EpisodeSampler(toy_train, 4, 5, combined=True, meta_batch=3).sample(torch.Generator().manual_seed(3))
    assert torch.equal(default.query_rows, batch.query_rows)  # same draw, only the inner set differs
    assert torch.equal(default.support_rows, batch.support_rows[:, :4])
    with pytest.raises(ValueError, match="combined_inner"):
        EpisodeSampler(toy_train, 4, 5, combined=True, meta_batch=3, combined_inner="query")
