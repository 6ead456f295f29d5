"""Do-no-harm check with an equivalence test (issue 13 item 4), fast enough for every CI run.

On a uniform control (every listener perceives alike) personalization has nothing to find,
so a method should score what consensus scores. "Not significantly different" proves nothing
(a small, noisy sample always gives it), so the check is a TOST equivalence test on the
per-listener paired differences with a stated margin, reported with its power. The test shows
that the check can fail: a deliberately harmful adaptation (fine-tuning with a learning rate
of 50) is flagged as harmful, while consensus against itself is equivalent.
"""

from __future__ import annotations

import pytest
from conftest import synthetic_task_toml

from perserbench.runner import run
from perserbench.stats import equivalence_test
from perserbench.tasks import load_task

MARGIN = 0.01
HARMFUL = {"lr": "50", "steps": "3", "guard": "false"}  # fine-tuning with an absurd step (3 steps keep the gated run fast)

UNIFORM_TASK = synthetic_task_toml(name="synthetic-uniform-no-harm", version="1.0.0",
                                   options="{ seed = 0, uniform = true }", listener_seed=17, shots=(20,),
                                   query=20, episodes=10, episode_seed=2024)


@pytest.fixture(scope="module")
def uniform(tmp_path_factory):
    path = tmp_path_factory.mktemp("no-harm") / "uniform.toml"
    path.write_text(UNIFORM_TASK)
    task = load_task(path)
    return task, {r.listener: r.macro_f1 for r in run("consensus", task, [20]).listeners}


def _versus_consensus(task, consensus, method, config=None):
    scores = {r.listener: r.macro_f1 for r in run(method, task, [20], config_overrides=config).listeners}
    assert scores.keys() == consensus.keys() and len(scores) == 16
    return equivalence_test([scores[k] - consensus[k] for k in sorted(scores)], MARGIN)


def test_consensus_is_equivalent_to_itself(uniform):
    task, consensus = uniform
    verdict = _versus_consensus(task, consensus, "consensus")
    assert verdict.equivalent and not verdict.harmful and verdict.mean == 0.0


def test_a_harmful_adaptation_fails_the_check(uniform):
    task, consensus = uniform
    verdict = _versus_consensus(task, consensus, "finetune", HARMFUL)
    assert verdict.harmful and not verdict.equivalent and verdict.ci_high < -MARGIN


def test_the_guard_turns_the_harmful_adaptation_into_consensus(uniform):
    """The same harmful fine-tuning (lr 50) behind the cross-validated gate: the support's own
    held-out items show that it hurts, so every listener keeps the consensus model."""
    task, consensus = uniform
    verdict = _versus_consensus(task, consensus, "finetune", {**HARMFUL, "guard": "true"})
    assert verdict.equivalent and not verdict.harmful and verdict.mean == 0.0


@pytest.mark.slow
def test_guarded_default_finetune_does_no_harm_on_uniform(uniform):
    task, consensus = uniform
    verdict = _versus_consensus(task, consensus, "finetune")
    assert verdict.equivalent and not verdict.harmful, verdict


# --------------------------------------------------------------------------- the gate itself


def test_cross_validation_sets_hold_out_each_fold_of_real_items():
    import torch

    from perserbench.no_harm import cross_validation_sets, slot_folds

    xs = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).view(2, 3, 1, 1)
    ys = torch.ones(2, 3, 2)
    ms = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # listener 1 has 2 items + padding
    x, y, m = cross_validation_sets(xs, ys, ms, folds=5)  # K = 3 <= 5 folds: leave-one-out
    assert x.shape == (6, 3, 1, 1) and torch.equal(x[4], xs[1]) and y.shape == (6, 3, 2)
    assert m.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]
    x, y, m = cross_validation_sets(xs, ys, ms, folds=2)  # slots 0 and 2 form fold 0
    assert x.shape == (4, 3, 1, 1) and m.tolist() == [[0, 1, 0], [1, 0, 1], [0, 1, 0], [1, 0, 0]]
    # a listener's folds do not depend on the padded width when it has at most `folds` items
    assert slot_folds(7, 5).tolist() == [0, 1, 2, 3, 4, 0, 1] and slot_folds(3, 5).tolist() == [0, 1, 2]


def test_v_fold_evidence_scores_each_item_with_the_model_that_did_not_see_its_fold():
    """A fake 'adaptation' that predicts, for every query, the mean label of the items it was
    trained on: under V-fold an item's adapted logit must be its own fold's complement mean."""
    import torch

    from perserbench.no_harm import held_out_evidence

    def fit_predict(xs, ys, ms, xq):
        share = (ys * ms.unsqueeze(-1)).sum(1) / ms.sum(1, keepdim=True).clamp(min=1)
        return (6 * share - 3).unsqueeze(1).expand(-1, xq.shape[1], -1)

    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]).view(1, 7, 1)
    ms, xs = torch.ones(1, 7), torch.zeros(1, 7, 1, 2)
    evidence = held_out_evidence(fit_predict, torch.zeros(1, 7, 1), xs, y, ms, torch.ones(1), folds=3)
    folds = [[0, 3, 6], [1, 4], [2, 5]]
    want = []
    for j in range(7):
        rest = [i for i in range(7) if i not in next(f for f in folds if j in f)]
        logit = 6 * float(y[0, rest].mean()) - 3
        want.append(float(torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([logit]), y[0, j])))
    assert abs(float(evidence.adapted_loss[0]) - sum(want) / 7) < 1e-6
    assert evidence.held_out.tolist() == [7.0]


def test_the_gate_keeps_adaptation_only_where_held_out_items_are_predicted_better():
    """A fake method whose 'adaptation' predicts the majority label of the rest of the support:
    it helps a listener whose labels agree, harms one whose labels alternate, and a single
    item is no evidence. The chunking does not change anything."""
    import torch

    from perserbench.no_harm import held_out_evidence

    def fit_predict(xs, ys, ms, xq):  # logit ±3 toward the majority of the rest of the support
        share = (ys * ms.unsqueeze(-1)).sum(1) / ms.sum(1, keepdim=True).clamp(min=1)
        return (6 * share - 3).unsqueeze(1).expand(-1, xq.shape[1], -1)

    ys = torch.tensor([[[1.0], [1.0], [1.0], [1.0]], [[1.0], [0.0], [1.0], [0.0]], [[1.0], [0.0], [0.0], [0.0]]])
    ms = torch.tensor([[1.0, 1, 1, 1], [1.0, 1, 1, 1], [1.0, 0, 0, 0]])
    xs = torch.zeros(3, 4, 1, 2)
    unadapted = torch.zeros(3, 4, 1)  # p = 0.5 everywhere
    evidence = held_out_evidence(fit_predict, unadapted, xs, ys, ms, torch.ones(1), chunk=256)
    assert evidence.keep().tolist() == [True, False, False]
    assert evidence.held_out.tolist() == [4.0, 4.0, 1.0]
    again = held_out_evidence(fit_predict, unadapted, xs, ys, ms, torch.ones(1), chunk=1)
    assert torch.equal(again.gain, evidence.gain)


def test_without_two_items_anywhere_no_model_is_fitted():
    """At K = 1 nothing can be held out and scored against the rest, so the gate rejects every
    listener without fitting anything (the cross-validation would fit on empty supports)."""
    import torch

    from perserbench.no_harm import held_out_evidence

    def fit_predict(xs, ys, ms, xq):
        raise AssertionError("fitted a model on a support with nothing to hold out")

    ys, ms, xs = torch.ones(3, 1, 2), torch.ones(3, 1), torch.zeros(3, 1, 1, 2)
    evidence = held_out_evidence(fit_predict, torch.zeros(3, 1, 2), xs, ys, ms, torch.ones(2))
    assert evidence.keep().tolist() == [False, False, False]
    assert evidence.gain.tolist() == [0.0, 0.0, 0.0] and evidence.held_out.tolist() == [1.0, 1.0, 1.0]


def test_a_positive_threshold_demands_evidence_beyond_noise():
    """``keep(z)``: the mean held-out gain must pass a one-sided t-test at level 1 − Φ(z). A
    listener whose gain is large on one held-out item and negative on the others has a
    positive mean (kept at z=0) but no consistent evidence (dropped at z=1); a listener whose
    every item gains is kept at both. The standard error is the sample SD over sqrt(n)."""
    import numpy as np
    import torch

    from perserbench.no_harm import held_out_evidence, item_loss

    ys = torch.tensor([[[1.0], [1.0], [1.0], [1.0]], [[1.0], [0.0], [0.0], [0.0]]])
    ms = torch.ones(2, 4)
    xs = torch.zeros(2, 4, 1, 2)
    unadapted = torch.zeros(2, 4, 1)  # p = 0.5 everywhere

    def item_logits(listener, item):  # listener 0: every item +2; listener 1: item 0 +6, others -0.4
        return 2.0 if listener == 0 else (6.0 if item == 0 else 0.4)

    def fit_predict(xs_, ys_, ms_, xq):  # K = 4 <= 5 folds: row listener·4 + j left item j out
        out = torch.empty(xs_.shape[0], xq.shape[1], 1)
        for row in range(xs_.shape[0]):
            out[row] = item_logits(*divmod(row, 4))
        return out

    evidence = held_out_evidence(fit_predict, unadapted, xs, ys, ms, torch.ones(1))
    adapted = torch.tensor([[[item_logits(i, j)] for j in range(4)] for i in range(2)])
    gains = (item_loss(unadapted, ys, torch.ones(1)) - item_loss(adapted, ys, torch.ones(1))).numpy()
    want_se = gains.std(axis=1, ddof=1) / np.sqrt(4)
    np.testing.assert_allclose(evidence.gain_se.numpy(), want_se, rtol=1e-5)
    assert (evidence.gain > 0).tolist() == [True, True]
    assert evidence.keep(0.0).tolist() == [True, True]
    assert evidence.keep(1.0).tolist() == [True, False]


def test_the_threshold_is_students_t_at_the_held_out_items_degrees_of_freedom():
    """With 4 held-out items (3 degrees of freedom) a mean gain of 2.5 standard errors clears
    ``z = 2`` standard errors but not the t-test at the same level (t ≈ 3.3): small supports
    need the evidence a small sample needs. With 200 items t and z nearly agree."""
    import torch
    from scipy import stats

    from perserbench.no_harm import HeldOutEvidence

    se = torch.tensor([0.1, 0.1, 0.1])
    held = torch.tensor([4.0, 4.0, 200.0])
    gain = torch.tensor([0.25, 0.34, 0.21])
    evidence = HeldOutEvidence(adapted_loss=torch.zeros(3) - gain, unadapted_loss=torch.zeros(3), held_out=held,
                               gain_se=se)
    assert 3.2 < stats.t.ppf(stats.norm.cdf(2.0), 3) < 3.4 and 2.0 < stats.t.ppf(stats.norm.cdf(2.0), 199) < 2.05
    assert (evidence.gain > 2.0 * se).tolist() == [True, True, True]
    assert evidence.keep(2.0).tolist() == [False, True, True]
