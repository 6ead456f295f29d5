"""``calibrate``: the batched MAP solver, the empirical-Bayes prior, sealed runs, and do-no-harm.

The toy corpus here (``toy-styles``) has a latent emotion per utterance and listeners who
perceive it through a personal class confusion. With ``uniform=True`` every listener uses the
same perception model (independent noise only), so personalization can gain nothing and a
good method must not fall below consensus, nor below its own population solution (K=1) when it
adapts to more support items (the toy consensus model is under-trained by the default budget, so
a recalibration of its logits alone gains there); otherwise a third of the listeners swap classes ``a`` and
``b``, which a class-mixing transform of the consensus logits can learn from a few items.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from perserbench.data import Annotations, Corpus, Utterance, register_corpus
from perserbench.episodes import LabelledItems, MetaTrainSet, episode_items, sample_episodes
from perserbench.errors import PerserbenchError
from perserbench.metalearn import pad_supports
from perserbench.methods.calibrate import (
    PooledPredictor,
    fit_prior,
    log_evidence,
    logit_features,
    map_fit,
)
from perserbench.registry import create_method
from perserbench.runner import run
from perserbench.tasks import load_task

STYLES_TASK = """
name = "toy-styles"
version = "0.1"
[corpus]
name = "toy-styles"
features = "toy"
labels = ["a", "b", "c"]
options = {{ uniform = {uniform} }}
[listeners]
folds = 3
seed = 1
[utterances]
split = "session"
heldout = ["S3"]
[episodes]
shots = [1, 5]
query = 12
min_query = 8
episodes = 4
seed = 7
"""


@register_corpus("toy-styles")
def load_toy_styles(uniform: bool = False, n_listeners: int = 9, per_session: int = 150, dim: int = 8,
                    seed: int = 0) -> Corpus:
    """3 sessions; every listener labels every utterance with its (perceived) emotion, right 85%
    of the time; listeners 2, 5, 8 swap emotions a and b unless ``uniform``."""
    rng = np.random.default_rng(seed)
    n = 3 * per_session
    emotion = rng.integers(0, 3, size=n)
    centre = np.zeros((n, dim))
    centre[np.arange(n), emotion] = 2.0
    features = (centre[:, None, :] + rng.normal(size=(n, 2, dim))).astype(np.float32)
    utts = tuple(Utterance(f"S{u // per_session + 1}_{u:04d}", f"spk{u % 4}", f"S{u // per_session + 1}")
                 for u in range(n))
    rows_u, rows_l, rows_y = [], [], []
    for j in range(n_listeners):
        perceived = emotion.copy()
        if not uniform and j % 3 == 2:
            perceived = np.choose(perceived, [1, 0, 2])
        slip = rng.random(n) < 0.15
        perceived[slip] = (perceived[slip] + rng.integers(1, 3, size=int(slip.sum()))) % 3
        labels = np.zeros((n, 3), dtype=bool)
        labels[np.arange(n), perceived] = True
        rows_u.extend(range(n))
        rows_l.extend([f"L{j}"] * n)
        rows_y.extend(labels)
    ann = Annotations(np.array(rows_u), np.array(rows_l, dtype=object), np.array(rows_y, dtype=bool))
    return Corpus("toy-styles", ("a", "b", "c"), utts, ann, {"toy": features})


def styles_task(tmp_path, uniform: bool):
    path = tmp_path / f"styles-{uniform}.toml"
    path.write_text(STYLES_TASK.format(uniform=str(uniform).lower()))
    return load_task(path)


def cell_means(result) -> dict[tuple[str, int], float]:
    return {(r.scenario, r.shots): r.mean for r in result.summary if r.metric == "macro_f1"}


# --------------------------------------------------------------------------- the solver


@pytest.mark.parametrize("mixing,margins", [("full", False), ("full", True), ("diagonal", True), ("none", True)])
def test_map_fit_reaches_the_optimum_scipy_finds(mixing, margins):
    """The batched damped Newton solves the same problem as scipy's L-BFGS, per listener, and
    its Hessian (the Laplace posterior precision, one [K, d] feature matrix per class) is the
    objective's second derivative."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 7, 4, generator=gen, dtype=torch.float64) * 2
    y = (torch.rand(3, 7, 4, generator=gen) < 0.3).double()
    mask = torch.ones(3, 7)
    mask[1, 3:] = 0  # a shorter support, padded
    pos_weight = torch.tensor([1.0, 3.0, 2.0, 5.0], dtype=torch.float64)
    d = logit_features(z[0], mixing, margins).shape[-1]
    mu = torch.randn(4, d, generator=gen, dtype=torch.float64) * 0.3
    precision = torch.rand(4, d, generator=gen, dtype=torch.float64) + 0.5
    theta, hessian, value = map_fit(z, y, mask, pos_weight, mu, precision, mixing, steps=50, margins=margins)

    def objective(th: torch.Tensor, n: int) -> torch.Tensor:
        """The MAP objective of listener n summed over classes, by the per-class features."""
        keep = mask[n] > 0
        feats = logit_features(z[n, keep], mixing, margins)  # [K, C, d]
        s = z[n, keep] + (feats * th).sum(-1)
        data = pos_weight * y[n, keep] * F.softplus(-s) + (1 - y[n, keep]) * F.softplus(s)
        return data.sum() + 0.5 * (precision * (th - mu) ** 2).sum()

    for n in range(3):
        best = minimize(lambda flat, n=n: float(objective(torch.from_numpy(flat).view(4, d), n)), mu.numpy().ravel(),
                        method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-14})
        assert float(objective(theta[n], n)) <= best.fun + 1e-8
        assert np.allclose(theta[n].numpy().ravel(), best.x, atol=1e-4)
        assert torch.allclose(value[n].sum(), objective(theta[n], n))
        exact = torch.autograd.functional.hessian(lambda th, n=n: objective(th, n), theta[n])  # [C, d, C, d]
        per_class = torch.stack([exact[c, :, c, :] for c in range(4)])  # classes do not interact
        assert torch.allclose(hessian[n], per_class)


def test_map_fit_without_evidence_is_the_prior_mean_and_with_much_evidence_leaves_it():
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    precision = torch.full((3, 2), 4.0, dtype=torch.float64)
    z = torch.randn(2, 400, 3, generator=gen, dtype=torch.float64)
    y = (torch.rand(2, 400, 3, generator=gen) < 0.5).double()
    mask = torch.ones(2, 400)
    mask[0] = 0  # listener 0 has no items at all
    theta, hessian, _ = map_fit(z, y, mask, torch.ones(3, dtype=torch.float64), mu, precision, "diagonal",
                                steps=30)
    assert torch.allclose(theta[0], mu)
    assert torch.allclose(hessian[0], torch.diag_embed(precision))
    assert (theta[1] - mu).abs().max() > 0.5  # 400 coin flips pull the transform away


def test_fit_prior_recovers_the_spread_of_listener_transforms():
    """Empirical Bayes: listeners' biases drawn around a known mean with a known spread are
    recovered from their labels (EM, Laplace posteriors), up to sampling error of 60 draws."""
    gen = torch.Generator().manual_seed(2)
    n_listeners, n_items = 60, 250  # < 32k elements per op: torch keeps it on one thread (fast on a busy CPU)
    true_mu = torch.tensor([[-1.0], [0.5]], dtype=torch.float64)
    true_std = torch.tensor([[0.8], [0.2]], dtype=torch.float64)
    theta = true_mu + true_std * torch.randn(n_listeners, 2, 1, generator=gen, dtype=torch.float64)
    z = torch.randn(n_listeners, n_items, 2, generator=gen, dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(z + theta.squeeze(-1).unsqueeze(1)), generator=gen)
    mu, var = fit_prior(z, y, torch.ones(n_listeners, n_items), torch.ones(2, dtype=torch.float64), "none",
                        iterations=20, min_std=0.01, steps=30)
    assert torch.allclose(mu, true_mu, atol=0.25)
    assert torch.allclose(var.sqrt(), true_std, atol=0.12)
    assert var[0, 0] > 4 * var[1, 0]  # the spread is learned per parameter


def test_the_evidence_picks_the_component_that_generated_the_support():
    """The mixture prior's weights: a listener whose labels come from transform A is better
    explained under a prior centred on A than on B (log_evidence), clearly so with 20 items;
    and between two priors centred on the truth, the narrow one wins (the Occam factor)."""
    gen = torch.Generator().manual_seed(5)
    a = torch.tensor([[-2.0], [1.5], [0.0]], dtype=torch.float64)  # per-class biases ("none" mixing)
    b = -a
    z = torch.randn(1, 20, 3, generator=gen, dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(z + a.squeeze(-1)), generator=gen)
    mask, weight = torch.ones(1, 20), torch.ones(3, dtype=torch.float64)

    def evidence(mu: torch.Tensor, precision: float) -> float:
        prec = torch.full_like(mu, precision)
        _, hessian, value = map_fit(z, y, mask, weight, mu, prec, "none", steps=30)
        return float(log_evidence(value, hessian, prec))

    assert evidence(a, 4.0) > evidence(b, 4.0) + 5.0
    assert evidence(a, 16.0) > evidence(a, 0.25)


# --------------------------------------------------------------------------- the method


@pytest.fixture(scope="module", params=[{}, {"population_weight": "0.5"}], ids=["gaussian", "mixture"])
def fitted(tmp_path_factory, request):
    task = styles_task(tmp_path_factory.mktemp("styles"), uniform=False)
    fold = task.folds[0]
    model = create_method("calibrate", request.param, seed=0)
    model.meta_fit(MetaTrainSet(task, fold))
    return task, fold, model


def test_batched_adaptation_equals_one_listener_at_a_time(fitted):
    task, fold, model = fitted
    items = [episode_items(task, ep) for k in (1, 5) for ep in sample_episodes(task, fold, "unseen", k)]
    assert len({len(s) for s, _, _ in items}) == 2  # unequal supports share one padded batch
    batched = model.adapt_many([s for s, _, _ in items])
    for predictor, (support, query, _) in zip(batched, items, strict=True):
        alone = model.adapt(support).predict_proba(query)
        assert torch.allclose(predictor.predict_proba(query), alone, atol=1e-6)


def test_component_fits_are_what_the_predictor_mixes_and_the_evidence_prefers_real_labels(fitted):
    """The per-component fits and evidences ``component_fits`` reports (the support's marginal
    likelihood in benchmarks/annotator_model.py) are the ones the predictor mixes, and the
    support's own labels are likelier than the same labels with classes swapped."""
    task, fold, model = fitted
    supports = [episode_items(task, ep)[0] for ep in sample_episodes(task, fold, "seen", 5)]
    with torch.no_grad():
        z, ys, ms = pad_supports([LabelledItems(model.head_(s.x).double(), s.y) for s in supports])
    theta, hessian, joint = model.component_fits(z, ys, ms)
    predictors = model.adapt_logits(z, ys, ms)
    components = 1 if model.config.population_weight == 1 else 1 + len(model.listeners_)
    assert joint.shape == (len(supports), components) and theta.shape[:2] == hessian.shape[:2] == joint.shape
    for i, predictor in enumerate(predictors):
        assert torch.allclose(predictor.theta, theta[i]) and torch.allclose(predictor.weights, torch.softmax(joint[i], 0))
    swapped = model.component_fits(z, ys[..., [2, 0, 1]], ms)[2]
    assert (torch.logsumexp(joint, 1) > torch.logsumexp(swapped, 1)).float().mean() > 0.8


def test_adaptation_follows_the_support(fitted):
    task, fold, model = fitted
    support, query, _ = episode_items(task, sample_episodes(task, fold, "seen", 5)[0])
    own = model.adapt(support).predict_proba(query)
    swapped = model.adapt(LabelledItems(support.x, support.y[:, [1, 0, 2]])).predict_proba(query)
    assert (own - swapped).abs().max() > 0.05


@pytest.mark.parametrize("config", [{}, {"population_weight": "0.5"}], ids=["gaussian", "mixture"])
def test_deterministic_per_seed(tmp_path, config):
    task = styles_task(tmp_path, uniform=False)
    fold = task.folds[1]
    train = MetaTrainSet(task, fold)
    items = [episode_items(task, ep) for ep in sample_episodes(task, fold, "seen", 5)]

    def predictions(seed: int) -> list[torch.Tensor]:
        model = create_method("calibrate", config, seed=seed)
        model.meta_fit(train)
        return [p.predict_proba(q) for p, (_, q, _) in zip(model.adapt_many([s for s, _, _ in items]), items)]

    first, again, other = predictions(3), predictions(3), predictions(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.allclose(a, b) for a, b in zip(first, other))  # the seed trains the consensus model


def test_bad_config_is_one_line_error():
    # declared ranges: refused when the config is made, before any data or training
    with pytest.raises(PerserbenchError, match="mixing='lowrank'"):
        create_method("calibrate", {"mixing": "lowrank"})
    with pytest.raises(PerserbenchError, match=r"min_prior_std=0.0 is out of range: choose a value > 0"):
        create_method("calibrate", {"min_prior_std": "0"})


# --------------------------------------------------------------------------- sealed runs


def test_sealed_run_passes_the_audit_and_personalizes_heterogeneous_listeners(tmp_path):
    task = styles_task(tmp_path, uniform=False)
    result = run("calibrate", task, [1, 5])
    assert result.audit_passed and result.audit["episodes"] > 0
    assert result.audit["max_abs_diff"] <= 1e-4
    ours, consensus = cell_means(result), cell_means(run("consensus", task, [1, 5]))
    for scenario in ("seen", "unseen"):
        assert ours[(scenario, 5)] > consensus[(scenario, 5)] + 0.03, (ours, consensus)
        assert ours[(scenario, 5)] > ours[(scenario, 1)] + 0.02, ours  # the support, not only the prior


@pytest.mark.parametrize("method, config", [
    ("calibrate", None),
    ("protonet", {"meta_epochs": "2", "steps_per_epoch": "4"}),  # gated by default (guard_z = 2)
    ("finetune", None),
    ("maml", {"meta_epochs": "2", "steps_per_epoch": "4"}),
    ("meta-perser", None),
], ids=["calibrate", "protonet", "finetune", "maml", "meta-perser"])
def test_no_harm_when_all_listeners_are_identical(tmp_path, method, config):
    task = styles_task(tmp_path, uniform=True)
    ours = cell_means(run(method, task, [1, 5], config_overrides=config))
    consensus = cell_means(run("consensus", task, [1, 5]))
    for cell, score in consensus.items():
        assert ours[cell] >= score - 0.02, (cell, ours, consensus)
    for scenario in ("seen", "unseen"):  # adapting to an identical listener's support costs nothing
        assert ours[(scenario, 5)] >= ours[(scenario, 1)] - 0.02, ours


# --------------------------------------------------------------------------- the annotator model in the pool


def test_the_pool_is_the_transform_and_the_annotator_model_weighed_in_log_odds(fitted):
    """A pooled predictor's probabilities are σ((1 − w)·logit p_transform + w·(logit p_annotator
    − logit t)) of its two parts; weight 0 is the transform's predictor alone."""
    task, fold, model = fitted
    support, query, _ = episode_items(task, sample_episodes(task, fold, "seen", 5)[0])
    pooled = model.adapt(support)
    assert isinstance(pooled, PooledPredictor) and pooled.weight == model.config.annotator_weight > 0
    transform = torch.logit(pooled.transform.predict_proba(query).double().clamp(1e-6, 1 - 1e-6))
    annotator = torch.logit(pooled.annotator.marginals(query.x).clamp(1e-6, 1 - 1e-6)) - torch.logit(
        torch.from_numpy(pooled.annotator.thresholds).double())
    w = pooled.weight
    expected = torch.sigmoid((1 - w) * transform + w * annotator).float()
    assert torch.allclose(pooled.predict_proba(query), expected, atol=1e-6)
    assert pooled.annotator.weights.sum().item() == pytest.approx(1.0)
    assert pooled.annotator.thresholds.shape == (support.y.shape[1],)

    alone = create_method("calibrate", {"population_weight": str(model.config.population_weight), "annotator_weight": "0"},
                           seed=0)
    alone.meta_fit(MetaTrainSet(task, fold))
    assert alone.annotators_ is None
    assert torch.equal(alone.adapt(support).predict_proba(query), pooled.transform.predict_proba(query))
