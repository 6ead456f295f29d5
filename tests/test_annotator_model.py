"""The low-dimensional annotator model (``perserbench/annotator.py``, part of ``calibrate``) and
``benchmarks/annotator_model.py``, which measures it on its own (docs/generators.md)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_task_toml

from perserbench.annotator import Population, annotation_probabilities, label_set_log_likelihood
from perserbench.tasks import load_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from annotator_model import Settings, annotator_scores, pool


def test_the_label_set_likelihood_is_the_generators_and_sums_to_one():
    """The torch likelihood the evidence head is trained through is the synthetic sampler's own
    formula (checked on a prior-shift corpus's listeners), and a proper distribution over the
    non-empty label sets of a generic tick curve."""
    task = load_task("synthetic-dev-prior-shift")
    truth = task.corpus.truth
    utterances = np.arange(40)
    labels = task.corpus.annotations.labels[:40]
    expected, _ = truth.every_listener_log_likelihood(utterances, labels)
    pi, q = truth.every_listener_proba(utterances)
    got = label_set_log_likelihood(torch.from_numpy(pi), torch.from_numpy(np.clip(q, 1e-12, 1 - 1e-12)),
                                   torch.from_numpy(labels).bool())
    assert np.allclose(got.numpy(), expected)

    rng = torch.Generator().manual_seed(0)
    pi, q = annotation_probabilities(torch.randn(3, 6, generator=rng, dtype=torch.float64),
                                     torch.tensor([-0.5, 2.0], dtype=torch.float64))
    every_set = torch.tensor([s for s in itertools.product([False, True], repeat=6) if any(s)])
    total = label_set_log_likelihood(pi[:, None], q[:, None], every_set[None]).exp().sum(1)
    assert torch.allclose(total, torch.ones(3, dtype=torch.float64))


def test_each_item_ticks_with_its_own_listeners_curve():
    """In training every annotation carries its own listener's tick curve (one row each); for a
    population, each member's curve covers all items. Either way q is shaped like the scores and
    row a uses curve a (a curve broadcast across other rows would train every listener on the
    whole batch's labels)."""
    rng = torch.Generator().manual_seed(2)
    scores = torch.randn(4, 6, generator=rng, dtype=torch.float64)
    ticks = torch.tensor([[-2.0, 0.5], [0.0, 1.0], [1.0, 2.0], [-1.0, 3.0]], dtype=torch.float64)
    _, q = annotation_probabilities(scores, ticks)
    assert q.shape == scores.shape
    for a in range(4):
        assert torch.allclose(q[a], annotation_probabilities(scores[a], ticks[a])[1])
    members = torch.cat([torch.zeros(3, 6, dtype=torch.float64), ticks[:3]], 1)
    marginals, _ = Population(members).marginals(scores)
    assert marginals.shape == (3, 4, 6)
    assert torch.allclose(marginals[1, 2], Population(members[1:2]).marginals(scores[2:3])[0][0, 0])


def test_the_annotator_model_is_deterministic_and_learns_from_the_support(tmp_path):
    """Same seeds, same scores; on a cut-down prior-shift task (listeners differ in base rates and
    thresholds, this model's own shape) ten labels beat one."""
    path = tmp_path / "small-prior-shift.toml"
    path.write_text(synthetic_task_toml(options='{ seed = 1, generator = "prior-shift" }', shots=(1, 10),
                                        query=20, episodes=3, episode_seed=11))
    task = load_task(path)
    first = annotator_scores(task, Settings(members=500, epochs=2))
    assert first == annotator_scores(task, Settings(members=500, epochs=2))
    assert first[("unseen", 10)]["macro_f1"] > first[("unseen", 1)]["macro_f1"]
    assert first[("unseen", 10)]["ess"] < first[("unseen", 1)]["ess"]  # the support narrows the posterior


def test_pooled_draws_weigh_every_episode_alike():
    """Pooling draws is the mean over all their episodes: a draw with more episodes weighs more,
    and a board row is pooled only where every draw has it."""
    cell = ("seen", 5)
    tables = [{cell: {"macro_f1": 0.5, "ess": 10.0, "episodes": 30.0, "consensus": 0.4, "oracle": 0.7}},
              {cell: {"macro_f1": 0.7, "ess": 20.0, "episodes": 10.0, "consensus": 0.6}}]
    pooled = pool(tables)[cell]
    assert pooled["macro_f1"] == pytest.approx(0.55) and pooled["consensus"] == pytest.approx(0.45)
    assert pooled["episodes"] == 40 and "oracle" not in pooled


def test_an_identity_confusion_hears_what_no_confusion_hears():
    """``--confusion`` only adds each listener's matrix: with identity matrices the members'
    marginals and support likelihoods are those of the plain model, and a swap moves them."""
    rng = torch.Generator().manual_seed(1)
    evidence = torch.randn(7, 6, generator=rng, dtype=torch.float64)
    numbers = torch.randn(5, 8, generator=rng, dtype=torch.float64)
    labels = torch.rand(7, 6, generator=rng) < 0.3
    labels[:, 0] = True
    plain = Population(numbers).marginals(evidence, labels)
    identity = Population(numbers, torch.eye(6, dtype=torch.float64).repeat(5, 1, 1)).marginals(evidence, labels)
    assert all(torch.allclose(a, b) for a, b in zip(plain, identity, strict=True))
    swap = torch.eye(6, dtype=torch.float64)[[1, 0, 2, 3, 4, 5]].repeat(5, 1, 1)
    assert not torch.allclose(plain[0], Population(numbers, swap).marginals(evidence)[0])
