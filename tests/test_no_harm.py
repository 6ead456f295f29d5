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
    verdict = _versus_consensus(task, consensus, "finetune", {"lr": "50"})
    assert verdict.harmful and not verdict.equivalent and verdict.ci_high < -MARGIN
