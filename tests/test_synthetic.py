"""The embedded synthetic corpus: deterministic, IEMOCAP-like, calibrated (DESIGN §4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perserbench.data import load_corpus
from perserbench.data.agreement import fleiss_kappa, fleiss_kappa_from_votes
from perserbench.data.synthetic import LABELS, generate
from perserbench.errors import PerserbenchError

# The worked example of Fleiss' kappa (10 subjects, 14 raters, 5 categories; kappa = 0.210).
FLEISS_TABLE = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def _one_hot_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    items, votes = [], []
    for i, row in enumerate(table):
        for c, n in enumerate(row):
            items += [i] * n
            votes += [np.eye(table.shape[1])[c]] * n
    return np.array(items), np.array(votes)


def test_fleiss_kappa_reproduces_the_worked_example():
    assert fleiss_kappa_from_votes(*_one_hot_rows(FLEISS_TABLE)) == pytest.approx(0.2099, abs=5e-4)


def test_fleiss_kappa_multi_label_votes_are_split():
    items = np.array([0, 0, 1, 1, 2, 2])
    single = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0]])
    assert fleiss_kappa_from_votes(items, single) == pytest.approx(1.0)
    # A listener ticking two classes gives each half a vote: identical two-label choices
    # agree less than identical single labels, but more than disjoint choices.
    double = single.copy()
    double[:2, 1] = 1
    disjoint = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    kappas = [fleiss_kappa_from_votes(items, v) for v in (single, double, disjoint)]
    assert kappas[0] > kappas[1] > 0 > kappas[2]


def test_corpus_is_iemocap_like_and_deterministic():
    corpus = load_corpus("synthetic", seed=0)
    assert corpus.vocabulary == LABELS
    assert len(corpus.utterances) >= 2000
    assert len({u.session for u in corpus.utterances}) == 5
    assert len({u.speaker for u in corpus.utterances}) == 10
    assert len(corpus.listeners) >= 12
    raters = np.bincount(corpus.annotations.utterance)
    assert raters.min() >= 3
    assert corpus.annotations.labels.sum(axis=1).min() >= 1
    assert corpus.annotations.labels.sum(axis=1).max() >= 2  # multi-label choices occur
    assert corpus.features["synthetic"].shape == (len(corpus.utterances), 3, 768)
    generate.cache_clear()
    again = load_corpus("synthetic", seed=0)
    assert again is not corpus
    np.testing.assert_array_equal(again.annotations.labels, corpus.annotations.labels)
    np.testing.assert_array_equal(again.features["synthetic"], corpus.features["synthetic"])
    other = load_corpus("synthetic", seed=1)
    assert not np.array_equal(other.annotations.labels[:500], corpus.annotations.labels[:500])


def test_kappa_is_in_the_iemocap_range_and_higher_when_listeners_agree():
    kappa = fleiss_kappa(load_corpus("synthetic"))
    uniform = fleiss_kappa(load_corpus("synthetic", uniform=True))
    assert 0.30 <= kappa <= 0.45, kappa
    assert uniform > kappa + 0.1, (kappa, uniform)


def test_uniform_listeners_share_one_perception_model():
    truth = load_corpus("synthetic", uniform=True).truth
    utts = np.arange(50)
    first = truth.listener_proba(truth.listeners[0], utts)
    for name in truth.listeners[1:]:
        np.testing.assert_allclose(truth.listener_proba(name, utts), first)
    personal = load_corpus("synthetic").truth
    a, b = (personal.listener_proba(n, utts) for n in personal.listeners[:2])
    assert np.abs(a - b).max() > 0.2


def test_listener_proba_is_the_marginal_the_labels_are_drawn_from():
    """The oracle's probabilities must be the generating marginals: the share of annotations
    on which a listener ticked a class matches the mean predicted probability."""
    corpus = load_corpus("synthetic")
    ann = corpus.annotations
    for name in corpus.listeners[:4]:
        rows = ann.listener == name
        expected = corpus.truth.listener_proba(name, ann.utterance[rows]).mean(axis=0)
        observed = ann.labels[rows].mean(axis=0)
        np.testing.assert_allclose(observed, expected, atol=0.05)


def test_loader_options_from_the_command_line_are_parsed():
    assert load_corpus("synthetic", seed="0", uniform="true").metadata["uniform"] is True
    with pytest.raises(PerserbenchError, match="option 'uniform' must be true or false, got 'maybe'"):
        load_corpus("synthetic", uniform="maybe")
    with pytest.raises(PerserbenchError, match="option 'seed' must be an integer, got 'x'"):
        load_corpus("synthetic", seed="x")


def test_data_inspect_cli(capsys, monkeypatch):
    import sys

    from perserbench.cli import main

    monkeypatch.setattr(sys, "argv", ["perserbench", "data", "inspect", "synthetic", "--json"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["utterances"] == 2400 and summary["listeners"] == 16
    assert 0.30 <= summary["fleiss_kappa"] <= 0.45
    assert sum(summary["labels_per_listener"].values()) == summary["annotations"]
    assert sum(summary["label_distribution"].values()) == pytest.approx(1.0)
    monkeypatch.setattr(sys, "argv", ["perserbench", "data", "inspect", "synthetic"])
    with pytest.raises(SystemExit):
        main()
    table = capsys.readouterr().out
    assert "Fleiss' kappa" in table and "labels per listener" in table


def test_data_inspect_unknown_corpus_is_one_line(capsys, monkeypatch):
    import sys

    from perserbench.cli import main

    monkeypatch.setattr(sys, "argv", ["perserbench", "data", "inspect", "nope"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown corpus 'nope'" in err[0]
