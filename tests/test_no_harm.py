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
    """The same harmful fine-tuning (lr 50) behind the leave-one-out gate: the support's own
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


def test_leave_one_out_sets_drop_one_real_item_each():
    import torch

    from perserbench.no_harm import leave_one_out_sets

    xs = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).view(2, 3, 1, 1)
    ys = torch.ones(2, 3, 2)
    ms = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # listener 1 has 2 items + padding
    x, y, m, held = leave_one_out_sets(xs, ys, ms)
    assert x.shape == (6, 3, 1, 1) and torch.equal(x[4], xs[1]) and y.shape == (6, 3, 2)
    assert m.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]
    assert held.tolist() == [True, True, True, True, True, False]


def test_the_gate_keeps_adaptation_only_where_held_out_items_are_predicted_better():
    """A fake method whose 'adaptation' predicts the majority label of the rest of the support:
    it helps a listener whose labels agree, harms one whose labels alternate, and a single
    item is no evidence. The chunking does not change anything."""
    import torch

    from perserbench.no_harm import loo_evidence

    def fit_predict(xs, ys, ms, xq):  # logit ±3 toward the majority of the rest of the support
        share = (ys * ms.unsqueeze(-1)).sum(1) / ms.sum(1, keepdim=True).clamp(min=1)
        return (6 * share - 3).unsqueeze(1).expand(-1, xq.shape[1], -1)

    ys = torch.tensor([[[1.0], [1.0], [1.0], [1.0]], [[1.0], [0.0], [1.0], [0.0]], [[1.0], [0.0], [0.0], [0.0]]])
    ms = torch.tensor([[1.0, 1, 1, 1], [1.0, 1, 1, 1], [1.0, 0, 0, 0]])
    xs = torch.zeros(3, 4, 1, 2)
    unadapted = torch.zeros(3, 4, 1)  # p = 0.5 everywhere
    evidence = loo_evidence(fit_predict, unadapted, xs, ys, ms, torch.ones(1), chunk=256)
    assert evidence.keep().tolist() == [True, False, False]
    assert evidence.held_out.tolist() == [4.0, 4.0, 1.0]
    again = loo_evidence(fit_predict, unadapted, xs, ys, ms, torch.ones(1), chunk=1)
    assert torch.equal(again.gain, evidence.gain)


def test_a_positive_threshold_demands_evidence_beyond_noise():
    """``keep(z)``: the mean leave-one-out gain must exceed z standard errors of the per-item
    gains. A listener whose gain is large on one held-out item and negative on the others has a
    positive mean (kept at z=0) but no consistent evidence (dropped at z=1); a listener whose
    every item gains is kept at both. The standard error is the sample SD over sqrt(n)."""
    import numpy as np
    import torch

    from perserbench.no_harm import item_loss, loo_evidence

    ys = torch.tensor([[[1.0], [1.0], [1.0], [1.0]], [[1.0], [0.0], [0.0], [0.0]]])
    ms = torch.ones(2, 4)
    xs = torch.zeros(2, 4, 1, 2)
    unadapted = torch.zeros(2, 4, 1)  # p = 0.5 everywhere

    def fit_predict(xs_, ys_, ms_, xq):  # listener 0: every item +2; listener 1: item 0 +6, others -0.4
        rows = xs_.shape[0] // 4
        out = torch.empty(rows * 4, 1, 1)
        for row in range(rows * 4):
            listener, item = divmod(row, 4)
            out[row] = 2.0 if listener == 0 else (6.0 if item == 0 else 0.4)
        return out

    evidence = loo_evidence(fit_predict, unadapted, xs, ys, ms, torch.ones(1))
    gains = (item_loss(unadapted, ys, torch.ones(1)) - item_loss(fit_predict(torch.zeros(8), None, None, None)
                                                                  .view(2, 4, 1), ys, torch.ones(1))).numpy()
    want_se = gains.std(axis=1, ddof=1) / np.sqrt(4)
    np.testing.assert_allclose(evidence.gain_se.numpy(), want_se, rtol=1e-5)
    assert (evidence.gain > 0).tolist() == [True, True]
    assert evidence.keep(0.0).tolist() == [True, True]
    assert evidence.keep(1.0).tolist() == [True, False]
