"""The K-shot ceiling ``bayes-oracle``: the label-set likelihood it rests on, the populations it
draws from, and the reference itself (a ceiling that equals the oracle where listeners are
alike and rises with K where they differ)."""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_task_toml

from perserbench.data.synthetic import generate
from perserbench.data.synthetic.perception import sample_labels
from perserbench.errors import PerserbenchError
from perserbench.methods.bayes_oracle import effective_sample_size
from perserbench.runner import run
from perserbench.tasks import load_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bayes_ceiling import bayes_ceiling

GENERATORS = ("styles", "confusion", "prior-shift")
EVERY_LABEL_SET = np.array(list(itertools.product([False, True], repeat=6)))  # 64 sets of 6 classes


@pytest.mark.parametrize("generator", GENERATORS)
def test_the_label_set_likelihood_is_a_distribution_and_the_vectorized_model_is_the_model(generator):
    """Over all 2^C label sets the likelihood sums to 1 for every listener and utterance; the
    all-listeners-at-once probabilities equal the per-listener ones the sampler uses."""
    truth = generate(seed=0, generator=generator).truth
    utterances = np.arange(7)
    pi, q = truth.every_listener_proba(utterances)
    for j, name in enumerate(truth.listeners):
        np.testing.assert_allclose(pi[j], truth.primary_proba(name, utterances), rtol=0, atol=1e-12)
        np.testing.assert_allclose(q[j], truth.secondary_proba(name, pi[j]), rtol=0, atol=1e-12)
    total = np.zeros((len(truth.listeners), len(utterances)))
    for labels in EVERY_LABEL_SET:
        log_likelihood, marginals = truth.every_listener_log_likelihood(utterances, np.tile(labels, (7, 1)))
        total += np.exp(log_likelihood)
    np.testing.assert_allclose(total, 1.0, atol=1e-9)
    np.testing.assert_allclose(marginals, [truth.listener_proba(n, utterances) for n in truth.listeners], atol=1e-12)


def test_the_label_set_likelihood_is_what_the_sampler_draws():
    """Frequencies of 40,000 label sets drawn by sample_labels for one (listener, utterance)
    match the likelihood (each within 4 binomial standard errors)."""
    truth = generate(seed=0, generator="prior-shift").truth
    n = 40_000
    drawn = sample_labels(np.random.default_rng(3), truth, np.full(n, 11), np.zeros(n, dtype=np.int64))
    counts = Counter(map(bytes, drawn.astype(np.uint8)))
    log_likelihood, _ = truth.every_listener_log_likelihood(np.full(64, 11), EVERY_LABEL_SET, np.array([0]))
    for labels, p in zip(EVERY_LABEL_SET, np.exp(log_likelihood[0]), strict=True):
        seen = counts.get(bytes(labels.astype(np.uint8)), 0) / n
        assert abs(seen - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-4, (labels, seen, p)


def test_a_population_comes_from_the_corpus_population():
    """Confusion listeners are drawn from the corpus's own schools (in turn); a uniform
    control's population is its one shared listener; draws are deterministic per seed."""
    truth = generate(seed=0, generator="confusion").truth
    population = truth.draw_population(np.random.default_rng(0), 30)
    assert population.schools is truth.schools and population.groups[:4] == ("school-1", "school-2", "school-3",
                                                                               "school-1")
    again = truth.draw_population(np.random.default_rng(0), 30)
    np.testing.assert_array_equal(population.confusion, again.confusion)
    for generator in GENERATORS:
        control = generate(seed=0, uniform=True, generator=generator).truth
        members = control.draw_population(np.random.default_rng(1), 5)
        expected = control.listener_proba(control.listeners[0], np.arange(20))
        for name in members.listeners:
            np.testing.assert_allclose(members.listener_proba(name, np.arange(20)), expected, atol=1e-12)


def _small_task(tmp_path, options: str, shots: tuple[int, ...]):
    path = tmp_path / "small.toml"
    path.write_text(synthetic_task_toml(options=options, scenarios=("seen", "unseen"), shots=shots, query=20,
                                        episodes=2, episode_seed=11))
    return load_task(path)


def test_bayes_oracle_is_the_oracle_where_listeners_are_alike(tmp_path):
    """On a uniform control every population listener is the listener: Bayes' rule changes
    nothing and the reference scores exactly what the oracle scores, episode for episode."""
    task = _small_task(tmp_path, '{ seed = 0, uniform = true, generator = "prior-shift" }', (5,))
    bayes, oracle = (run(name, task, [5]) for name in ("bayes-oracle", "oracle"))
    assert bayes.is_reference
    assert [e.macro_f1 for e in bayes.episodes] == pytest.approx([e.macro_f1 for e in oracle.episodes], abs=1e-12)


def test_the_k_shot_ceiling_rises_with_k_below_the_oracle_and_the_script_is_the_runner(tmp_path):
    """Where listeners differ, more support labels reveal more of the listener: the K = 20
    ceiling is above the no-support one, at most the oracle; the script's rows equal a sealed
    run of the reference; a second run reproduces it."""
    task = _small_task(tmp_path, '{ seed = 0, generator = "prior-shift" }', (20,))
    cells = bayes_ceiling(task, [20], population=500)
    result = run("bayes-oracle", task, [20], config_overrides={"population": "500"})
    oracle = run("oracle", task, [20])
    for summary in (r for r in result.summary if r.metric == "macro_f1"):
        cell = cells[(summary.scenario, 20)]
        assert cell["bayes"] == pytest.approx(summary.mean, abs=1e-12)
        assert cell["bayes"] > cell["prior"] + 0.02, cell
        ceiling = next(r.mean for r in oracle.summary if r.metric == "macro_f1" and r.scenario == summary.scenario)
        assert cell["bayes"] <= ceiling + 1e-9, (cell, ceiling)
        assert cell["ess"] < 50, cell  # 20 labels put the posterior on a few of the 500 listeners (measured: ~3)
    again = run("bayes-oracle", task, [20], config_overrides={"population": "500"})
    assert [e.macro_f1 for e in again.episodes] == [e.macro_f1 for e in result.episodes]


def test_a_listener_too_heavy_to_cache_is_evaluated_episode_by_episode(tmp_path, monkeypatch):
    """Above the cache budget only the episode's own rows are evaluated: the same predictions,
    nothing kept."""
    from perserbench.methods import bayes_oracle

    task = _small_task(tmp_path, '{ seed = 0, generator = "prior-shift" }', (5,))
    cached = run("bayes-oracle", task, [5], config_overrides={"population": "300"})
    monkeypatch.setattr(bayes_oracle, "CACHED_ROW_MEMBERS", 0)
    method = bayes_oracle.BayesOracle(bayes_oracle.BayesOracleConfig(population=300))
    method.meta_fit(None)
    from perserbench.episodes import sample_episodes

    episode = sample_episodes(task, task.folds[0], "seen", 5)[0]
    assert len(method.pool(task, episode).rows) == len(np.union1d(episode.support, episode.query))
    assert method.pools_ == {}
    uncached = run("bayes-oracle", task, [5], config_overrides={"population": "300"})
    assert [e.macro_f1 for e in uncached.episodes] == pytest.approx([e.macro_f1 for e in cached.episodes], abs=1e-12)


def test_the_effective_sample_size_counts_the_listeners_that_carry_the_posterior():
    assert effective_sample_size(np.full(40, 1 / 40)) == pytest.approx(40)
    assert effective_sample_size(np.eye(1, 40)[0]) == pytest.approx(1)
    assert effective_sample_size(np.r_[np.full(4, 0.25), np.zeros(36)]) == pytest.approx(4)


def test_bayes_oracle_needs_a_generative_truth(toy_task_file):
    with pytest.raises(PerserbenchError, match="method 'bayes-oracle' needs a synthetic corpus"):
        run("bayes-oracle", load_task(toy_task_file), [5])
