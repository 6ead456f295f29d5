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
HARMFUL = {"lr": "50", "steps": "3"}  # fine-tuning with an absurd step (3 steps keep the gated run fast)

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
    verdict = _versus_consensus(task, consensus, "finetune", {"guard": "true"})
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
