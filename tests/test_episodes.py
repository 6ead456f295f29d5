import dataclasses

import numpy as np
import pytest
import torch

from perserbench.episodes import (
    Episode,
    MetaTrainSet,
    all_episodes,
    check_episode,
    episode_items,
    sample_episodes,
)
from perserbench.errors import LeakageError, PerserbenchError
from perserbench.tasks import ListenerFold, load_task


@pytest.fixture
def task(toy_task_file):
    return load_task(toy_task_file)


def test_every_episode_respects_the_invariants(task):
    ann = task.corpus.annotations
    episodes = list(all_episodes(task))
    spec = task.spec.episodes
    n_test = sum(len(f.test[s]) for f in task.folds for s in spec.scenarios)
    assert len(episodes) == n_test * len(spec.shots) * spec.episodes
    for ep in episodes:
        fold = task.folds[ep.fold]
        assert len(ep.support) == ep.shots
        assert not set(ep.support) & set(ep.query)
        assert not set(ann.utterance[ep.support]) & set(ann.utterance[ep.query])
        assert ep.listener not in fold.train
        assert set(ann.listener[np.concatenate([ep.support, ep.query])]) == {ep.listener}
        in_train = task.train_pool[ann.utterance[np.concatenate([ep.support, ep.query])]]
        assert in_train.all() if ep.scenario == "seen" else not in_train.any()


def test_supports_are_nested_and_query_shared_across_shots(task):
    fold = task.folds[0]
    k1 = sample_episodes(task, fold, "seen", 1)
    k5 = sample_episodes(task, fold, "seen", 5)
    for a, b in zip(k1, k5):
        assert a.listener == b.listener and a.index == b.index
        np.testing.assert_array_equal(a.query, b.query)
        assert set(a.support) <= set(b.support)


def test_episodes_are_a_function_of_the_spec_seed(task, toy_task_file, tmp_path):
    again = load_task(toy_task_file)
    for a, b in zip(all_episodes(task), all_episodes(again)):
        assert a.key == b.key
        np.testing.assert_array_equal(a.support, b.support)
        np.testing.assert_array_equal(a.query, b.query)


def test_meta_train_set_holds_only_meta_train_listeners_on_training_pool(task):
    ann = task.corpus.annotations
    for fold in task.folds:
        train = MetaTrainSet(task, fold)
        assert set(train.listeners) == set(fold.train)
        assert not set(train.listeners) & set(fold.test["seen"])
        pool_rows = {row.tobytes() for row in task.features[task.train_pool]}
        heldout_rows = {row.tobytes() for row in task.features[~task.train_pool]}
        rows = {row.numpy().tobytes() for row in train.x}
        assert rows <= pool_rows and not rows & heldout_rows
        assert not hasattr(train, "truth") and not hasattr(train, "utterance_index")
        # consensus is a function of meta-train labels only: changing a test listener's labels
        # leaves it unchanged
        tested = fold.test["seen"][0]
        poisoned = ann.labels.copy()
        poisoned[ann.listener == tested] = ~poisoned[ann.listener == tested]
        other = dataclasses.replace(task.corpus.annotations, labels=poisoned)
        task2 = dataclasses.replace(task, corpus=dataclasses.replace(task.corpus, annotations=other))
        torch.testing.assert_close(MetaTrainSet(task2, fold).consensus, train.consensus)


def test_consensus_threshold_rule():
    from perserbench.episodes import MetaTrainSet as M
    from perserbench.featurerows import FeatureRows

    m = M.__new__(M)
    m.labels = ("a", "b", "c")
    m.features = FeatureRows(np.zeros((2, 1, 1), dtype=np.float32))
    m.utterance = torch.tensor([0, 0, 0, 1, 1])
    m.y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.float32)
    m.consensus_threshold = 0.6
    # utt 0: a 2/3, b 2/3 -> both; utt 1: a 1/2, c 1/2 -> none reach 0.6 -> ties for the max
    assert m.consensus.tolist() == [[1, 1, 0], [1, 0, 1]]


def test_a_leaking_fold_is_caught(task):
    fold = task.folds[0]
    leaky = ListenerFold(fold.index, fold.train + (fold.test["seen"][0],), fold.test)
    with pytest.raises(LeakageError, match="also meta-train"):
        MetaTrainSet(task, leaky)
    with pytest.raises(LeakageError):
        sample_episodes(task, leaky, "seen", 1)


def test_leaking_episodes_are_caught(task):
    fold = task.folds[0]
    ep = sample_episodes(task, fold, "unseen", 5)[0]
    overlap = dataclasses.replace(ep, query=np.concatenate([ep.query, ep.support[:1]]))
    with pytest.raises(LeakageError, match="share items"):
        check_episode(task, fold, overlap)
    seen_rows = task.listener_rows(ep.listener, "seen")
    wrong_pool = dataclasses.replace(ep, support=seen_rows[:5])
    with pytest.raises(LeakageError, match="training pool"):
        check_episode(task, fold, wrong_pool)
    ann = task.corpus.annotations
    query_utts = set(ann.utterance[ep.query])
    other = [r for r in task.listener_rows(fold.train[0], "unseen") if ann.utterance[r] not in query_utts][:5]
    foreign = dataclasses.replace(ep, support=np.array(other))
    with pytest.raises(LeakageError, match="another listener"):
        check_episode(task, fold, foreign)


def test_leaking_pool_is_caught(task):
    fold = task.folds[0]
    pool = task.train_pool.copy()
    pool[:] = True  # held-out utterances would enter training
    leaky = dataclasses.replace(task, train_pool=pool)
    ep = sample_episodes(task, fold, "unseen", 1)[0]
    with pytest.raises(LeakageError):
        check_episode(leaky, fold, ep)


def test_query_items_carry_no_labels(task):
    ep = sample_episodes(task, task.folds[0], "seen", 5)[0]
    support, query, truth = episode_items(task, ep)
    assert not hasattr(query, "y")
    assert support.y.shape == (5, 3) and truth.shape == (len(ep.query), 3)


def test_shots_outside_the_task_are_refused(task):
    with pytest.raises(PerserbenchError, match="K=3 is not a shot count"):
        sample_episodes(task, task.folds[0], "seen", 3)


def test_episode_key_fields():
    ep = Episode(1, "L", "seen", 5, 2, np.array([1]), np.array([2]))
    assert ep.key == (1, "L", "seen", 5, 2)
