"""The personalization methods through the real protocol objects (toy task, tiny configs)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from perserbench.episodes import MetaTrainSet, episode_items, sample_episodes
from perserbench.errors import PerserbenchError
from perserbench.registry import create_method, get_method, method_names
from perserbench.runner import run
from perserbench.tasks import load_task

# Small budgets so every test takes about a second; the defaults are exercised by the
# full comparison (see the issue report), not here.
SMALL = {
    "finetune": {"guard": "false"},  # the ungated method; the gate has its own tests below
    "protonet": {"meta_epochs": "2", "steps_per_epoch": "4", "support": "6", "query": "6", "guard": "false"},
    "maml": {"meta_epochs": "2", "steps_per_epoch": "4", "inner_steps": "2", "guard": "false"},
    "meta-perser": {"meta_epochs": "2", "steps_per_epoch": "4", "inner_steps": "2", "first_order_epochs": "1",
                    "guard": "false"},
}
METHODS = sorted(SMALL)


@pytest.fixture
def toy(toy_task_file):
    return load_task(toy_task_file)


def predictions(task, method: str, overrides: dict[str, str], seed: int = 0, scenario: str = "unseen",
                k: int = 5) -> list[np.ndarray]:
    """Query probabilities of every fold-0 episode of a cell, as the runner computes them."""
    fold = task.folds[0]
    torch.manual_seed(seed)
    model = create_method(method, overrides, seed=seed)
    model.meta_fit(MetaTrainSet(task, fold))
    items = [episode_items(task, ep) for ep in sample_episodes(task, fold, scenario, k)]
    torch.manual_seed(seed + 1)
    predictors = model.adapt_many([support for support, _, _ in items])
    return [p.predict_proba(query).numpy() for p, (_, query, _) in zip(predictors, items)]


def test_all_methods_are_registered():
    assert set(METHODS) <= set(method_names())


@pytest.mark.parametrize("method", METHODS)
def test_method_is_deterministic_under_a_seed(toy, method):
    a = run(method, toy, [1, 5], seeds=[3], config_overrides=SMALL[method])
    b = run(method, toy, [1, 5], seeds=[3], config_overrides=SMALL[method])
    key = lambda r: [(e.listener, e.scenario, e.shots, e.episode, e.macro_f1, e.micro_f1, e.top1) for e in r.episodes]
    assert key(a) == key(b)
    p0 = predictions(toy, method, SMALL[method], seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(p0, predictions(toy, method, SMALL[method], seed=3)))
    p1 = predictions(toy, method, SMALL[method], seed=4)
    assert not all(np.allclose(x, y) for x, y in zip(p0, p1))  # the seed matters


@pytest.mark.parametrize("method", METHODS)
def test_adaptation_never_reads_query_labels(toy_task_file, method):
    """Poisoning query labels in the corpus leaves every prediction unchanged; poisoning
    support labels changes them (so the check can fail). An item can be query in one episode
    and support in another, so each poisons the rows that are only ever in that role."""
    clean = load_task(toy_task_file)
    base = predictions(clean, method, SMALL[method])
    episodes = sample_episodes(clean, clean.folds[0], "unseen", 5)
    support = set(np.concatenate([ep.support for ep in episodes]).tolist())
    query = set(np.concatenate([ep.query for ep in episodes]).tolist())

    def poisoned(rows: set[int]) -> list[np.ndarray]:
        task = load_task(toy_task_file)
        index = np.array(sorted(rows))
        task.corpus.annotations.labels[index] = ~task.corpus.annotations.labels[index]
        return predictions(task, method, SMALL[method])

    assert len(query - support) >= len(episodes)  # a real poisoning, not an empty set
    query_poisoned = poisoned(query - support)
    assert all(np.array_equal(x, y) for x, y in zip(base, query_poisoned))
    support_poisoned = poisoned(support - query)
    assert not all(np.allclose(x, y) for x, y in zip(base, support_poisoned))


def test_finetune_with_zero_steps_is_the_consensus_model(toy):
    consensus = predictions(toy, "consensus", {})
    zero = predictions(toy, "finetune", {"steps": "0"})
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(consensus, zero))
    tuned = predictions(toy, "finetune", SMALL["finetune"])
    assert not all(np.allclose(x, y, atol=1e-3) for x, y in zip(consensus, tuned))


@pytest.mark.parametrize("method", ["finetune", "maml"])
def test_batched_adaptation_equals_one_listener_at_a_time(toy, method):
    fold = toy.folds[0]
    model = create_method(method, SMALL[method], seed=0)
    model.meta_fit(MetaTrainSet(toy, fold))
    items = [episode_items(toy, ep) for ep in sample_episodes(toy, fold, "seen", 5)]
    batched = model.adapt_many([s for s, _, _ in items])
    for predictor, (support, query, _) in zip(batched, items):
        alone = model.adapt(support).predict_proba(query)
        assert torch.allclose(predictor.predict_proba(query), alone, atol=1e-5)


def test_finetune_dual_and_functional_call_forms_agree(toy):
    dual = predictions(toy, "finetune", {**SMALL["finetune"], "dual": "true"})
    plain = predictions(toy, "finetune", {**SMALL["finetune"], "dual": "false"})
    assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(dual, plain))


def test_protonet_prototypes_are_multi_label_and_missing_classes_fall_back_to_consensus(toy):
    from perserbench.methods.protonet import prototypes

    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    pos, neg, valid = prototypes(e, y, torch.ones(3))
    assert torch.allclose(pos[0], torch.tensor([1.5, 1.0]))  # items 0 and 2 carry class 0
    assert torch.allclose(neg[0], torch.tensor([0.0, 1.0]))  # item 1 lacks it
    assert torch.allclose(pos[1], e.mean(0))  # an item counts for every class it carries
    assert valid.tolist() == [True, False, False]  # class 1 has no negative, class 2 no positive

    fold = toy.folds[0]
    model = create_method("protonet", SMALL["protonet"], seed=0)
    model.meta_fit(MetaTrainSet(toy, fold))
    support, query, _ = episode_items(toy, sample_episodes(toy, fold, "seen", 1)[0])
    proba = model.adapt(support).predict_proba(query)
    consensus = torch.sigmoid(model.consensus_(query.x)).detach()
    # K=1: each class is either carried (no negative) or not (no positive) — all fall back.
    assert torch.allclose(proba, consensus)


def test_meta_perser_ablated_to_vanilla_settings_is_maml(toy):
    """Every meta-perser component is a config switch: turned off, it is exactly maml."""
    maml = predictions(toy, "maml", SMALL["maml"])
    ablated = predictions(toy, "meta-perser", {**SMALL["maml"], "init": "random", "combined": "false",
                                               "per_step_lrs": "false", "first_order_epochs": "0"})
    assert all(np.array_equal(x, y) for x, y in zip(maml, ablated))
    full = predictions(toy, "meta-perser", SMALL["meta-perser"])
    assert not all(np.allclose(x, y) for x, y in zip(maml, full))


@pytest.mark.parametrize("method", ["maml", "protonet"])
def test_bad_init_is_a_user_error(toy, method):
    with pytest.raises(PerserbenchError, match="init='imagenet' is not a valid choice"):  # before any work
        create_method(method, {"init": "imagenet"})
    model = get_method(method)(dataclasses.replace(get_method(method).Config(), init="imagenet"))
    with pytest.raises(PerserbenchError, match="init='imagenet'"):  # a config built in code: meta_fit checks
        model.meta_fit(MetaTrainSet(toy, toy.folds[0]))


def test_every_config_field_documents_its_default():
    from perserbench.registry import config_fields

    for method in METHODS:
        for f in config_fields(method):
            assert len(f.doc) > 15, f"{method}.{f.name} has no documented reason"


def test_meta_perser_pretraining_is_the_consensus_model(toy):
    """init='consensus' with the consensus method's own epochs and no meta-learning and no
    adaptation is exactly `consensus` — the pretraining is the reference model, not a lookalike."""
    consensus = predictions(toy, "consensus", {})
    from perserbench.methods.consensus import ConsensusConfig

    epochs = str(ConsensusConfig().epochs)
    pretrained = predictions(toy, "meta-perser", {"pretrain_epochs": epochs, "meta_epochs": "0", "inner_steps": "0"})
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(consensus, pretrained))
    shorter = predictions(toy, "meta-perser", {"pretrain_epochs": "2", "meta_epochs": "0", "inner_steps": "0"})
    assert not all(np.allclose(x, y) for x, y in zip(consensus, shorter))  # the config field is used


PERSONALIZATION = ("finetune", "protonet", "maml", "meta-perser")
UNIFORM_SHOTS = [1, 5, 10, 20]


def _uniform_listener_scores(result, scenario: str, k: int) -> dict[str, float]:
    return {r.listener: r.macro_f1 for r in result.listeners if r.scenario == scenario and r.shots == k}


def _assert_not_better(result, reference, label: str) -> None:
    """Paired Wilcoxon over test listeners per (scenario, K) cell, Holm-adjusted over the
    method's cells (one family per method, as in the report): with 8 cells per method, an
    uncorrected 5% test would flag a method by chance alone about a third of the time."""
    from perserbench.stats import holm, paired_test

    cells, tests = [], []
    for scenario in ("seen", "unseen"):
        for k in UNIFORM_SHOTS:
            mine = _uniform_listener_scores(result, scenario, k)
            theirs = _uniform_listener_scores(reference, scenario, k)
            names = sorted(mine)
            cells.append((scenario, k))
            tests.append(paired_test(np.array([mine[n] for n in names]), np.array([theirs[n] for n in names])))
    adjusted = holm([t.p_value for t in tests])
    for cell, test, p in zip(cells, tests, adjusted):
        assert not (p < 0.05 and test.mean_diff > 0), (label, cell, test, p)


@pytest.fixture(scope="module")
def uniform_task():
    return load_task("synthetic-uniform")


@pytest.mark.slow
@pytest.mark.parametrize("method", PERSONALIZATION)
def test_no_method_beats_consensus_on_synthetic_uniform(uniform_task, method):
    """DESIGN §4 sanity check: when every listener perceives alike, personalization has nothing
    to learn, so no method (default config) may beat consensus significantly — paired Wilcoxon
    over test listeners per scenario and K, Holm-adjusted over the method's cells (alpha 0.05)."""
    reference = run("consensus", uniform_task, UNIFORM_SHOTS)
    _assert_not_better(run(method, uniform_task, UNIFORM_SHOTS), reference, method)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["maml", "meta-perser"])
def test_adaptation_adds_nothing_on_synthetic_uniform(uniform_task, method):
    """The personalization part of the MAML family: on synthetic-uniform, adapting to the K
    support items is not significantly better than the same meta-learned init left unadapted
    (``adapt_steps=0``: identical meta-training, no test-time steps)."""
    unadapted = run(method, uniform_task, UNIFORM_SHOTS, config_overrides={"adapt_steps": "0"})
    _assert_not_better(run(method, uniform_task, UNIFORM_SHOTS), unadapted, f"{method} adapted")


def test_adapt_steps_zero_is_the_unadapted_meta_init(toy):
    """adapt_steps changes test-time adaptation only: 0 gives one prediction for every listener."""
    fold = toy.folds[0]
    model = create_method("meta-perser", {**SMALL["meta-perser"], "adapt_steps": "0"}, seed=0)
    model.meta_fit(MetaTrainSet(toy, fold))
    items = [episode_items(toy, ep) for ep in sample_episodes(toy, fold, "unseen", 5)]
    preds = model.adapt_many([s for s, _, _ in items])
    query = items[0][1]
    first = preds[0].predict_proba(query)
    assert all(torch.allclose(p.predict_proba(query), first) for p in preds[1:])
    adapted = create_method("meta-perser", SMALL["meta-perser"], seed=0)
    adapted.meta_fit(MetaTrainSet(toy, fold))
    assert torch.equal(adapted.learner_.meta["out.bias"], model.learner_.meta["out.bias"])  # same meta-training
    with pytest.raises(PerserbenchError, match="adapt_steps=9"):
        create_method("maml", {"adapt_steps": "9"}).meta_fit(MetaTrainSet(toy, fold))


# --------------------------------------------------------------------------- issue 14: do no harm


GUARDED = [(m, {**SMALL[m], "guard": "true"}) for m in METHODS]


@pytest.mark.parametrize(("method", "config"), GUARDED, ids=[m for m, _ in GUARDED])
def test_guarded_adaptation_is_batched_exactly_and_deterministic(toy, method, config):
    """The gate is a function of one listener's support: adapting all listeners at once equals
    adapting each alone, and the same seed gives the same predictions."""
    fold = toy.folds[0]
    model = create_method(method, config, seed=0)
    model.meta_fit(MetaTrainSet(toy, fold))
    items = [episode_items(toy, ep) for ep in sample_episodes(toy, fold, "seen", 5)]
    batched = model.adapt_many([s for s, _, _ in items])
    for predictor, (support, query, _) in zip(batched, items):
        assert torch.allclose(predictor.predict_proba(query), model.adapt(support).predict_proba(query), atol=1e-5)
    again = predictions(toy, method, config, seed=3, scenario="seen")
    assert all(np.array_equal(x, y) for x, y in zip(again, predictions(toy, method, config, seed=3, scenario="seen")))


@pytest.mark.parametrize("method", METHODS)
def test_guard_with_one_support_item_keeps_the_unadapted_model(toy, method):
    """K=1 leaves nothing to leave out: no evidence, so every listener keeps the fallback
    model: consensus, for every adaptive built-in (maml and meta-perser fall back to the
    consensus model, not to their meta-learned init)."""
    unadapted = ("consensus", {})
    want = predictions(toy, *unadapted, k=1)
    got = predictions(toy, method, {**SMALL[method], "guard": "true"}, k=1)
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(got, want))
    if method != "protonet":  # (ungated protonet is consensus at K=1 by construction)
        ungated = predictions(toy, method, SMALL[method], k=1)
        assert not all(np.allclose(x, y, atol=1e-4) for x, y in zip(ungated, want))


def test_finetune_pull_is_exact_at_zero_and_pulls_toward_consensus(toy):
    consensus = predictions(toy, "consensus", {})
    ungated = SMALL["finetune"]
    plain = predictions(toy, "finetune", ungated)
    assert all(np.array_equal(x, y) for x, y in zip(plain, predictions(toy, "finetune", {**ungated, "pull": "0"})))
    dist = lambda preds: float(np.mean([np.abs(p - c).mean() for p, c in zip(preds, consensus)]))
    pulled = [predictions(toy, "finetune", {**ungated, "pull": str(p), "lr": "0.5"}) for p in (0, 0.5, 1.5)]
    assert dist(pulled[0]) > dist(pulled[1]) > dist(pulled[2]) > 0  # stronger pull, nearer consensus
    dual = predictions(toy, "finetune", {**ungated, "pull": "1", "lr": "0.5", "dual": "true"})
    plain_form = predictions(toy, "finetune", {**ungated, "pull": "1", "lr": "0.5", "dual": "false"})
    assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(dual, plain_form))
    with pytest.raises(PerserbenchError, match="lr \\* pull"):  # the pull's own step would diverge
        create_method("finetune", {"pull": "40", "lr": "0.05"}).meta_fit(MetaTrainSet(toy, toy.folds[0]))


def test_protonet_shrinkage_is_exact_at_zero_and_pulls_prototypes_to_the_prior(toy):
    from perserbench.methods.protonet import prototypes

    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    y = torch.tensor([[1.0], [0.0], [0.0]])
    prior = (torch.tensor([[4.0, 4.0]]), torch.tensor([[-1.0, -1.0]]))
    pos, neg, valid = prototypes(e, y, torch.ones(3), prior, tau=2.0)
    assert torch.allclose(pos[0], (e[0] + 2 * prior[0][0]) / 3)  # one item plus two pseudo-items
    assert torch.allclose(neg[0], (e[1] + e[2] + 2 * prior[1][0]) / 4)
    assert valid.tolist() == [True]
    assert all(torch.equal(a, b) for a, b in zip(prototypes(e, y, torch.ones(3), prior, 0.0),
                                                 prototypes(e, y, torch.ones(3))))
    small = SMALL["protonet"]
    fold = toy.folds[0]
    unshrunk = create_method("protonet", {**small, "tau": "0"}, seed=0)
    unshrunk.meta_fit(MetaTrainSet(toy, fold))
    assert set(unshrunk.meta_) == {"layer_logits", "hidden.weight", "hidden.bias", "log_scale"}  # no prior at all
    shrunk = predictions(toy, "protonet", {**small, "tau": "2"})
    assert not all(np.allclose(x, y) for x, y in zip(shrunk, predictions(toy, "protonet", {**small, "tau": "0"})))
    model = create_method("protonet", {**small, "tau": "2"}, seed=0)
    model.meta_fit(MetaTrainSet(toy, fold))
    assert model.meta_["prior_pos"].shape == (3, 256)  # meta-learned, one per class
    items = [episode_items(toy, ep) for ep in sample_episodes(toy, fold, "seen", 5)]
    batched = model.adapt_many([s for s, _, _ in items])
    for predictor, (support, query, _) in zip(batched, items):
        assert torch.allclose(predictor.predict_proba(query), model.adapt(support).predict_proba(query), atol=1e-5)


def test_meta_perser_default_init_is_the_consensus_method_model(toy):
    """With its *default* config (no overrides) meta-perser starts from exactly the model the
    consensus method trains: same architecture fields, same epochs, same weights."""
    from perserbench.methods.consensus import ConsensusConfig
    from perserbench.methods.meta_perser import MetaPerserConfig

    defaults, consensus_config = MetaPerserConfig(), ConsensusConfig()
    assert defaults.init == "consensus" and defaults.pretrain_epochs == consensus_config.epochs
    assert (defaults.hidden, defaults.layer_weights) == (consensus_config.hidden, consensus_config.layer_weights)
    train = MetaTrainSet(toy, toy.folds[0])
    consensus = create_method("consensus", {}, seed=2)
    consensus.meta_fit(train)
    init = create_method("meta-perser", {}, seed=2).initial_head(train)
    want = consensus.model_.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in init.state_dict().items())
