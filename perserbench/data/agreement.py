"""Inter-listener agreement: Fleiss' kappa generalised to multi-label annotations.

Why hand-written: the usual implementations (``statsmodels.stats.inter_rater.fleiss_kappa``,
not a dependency here) take a count table with one label per rater and the same number of
raters per item. Emotion corpora have neither: a listener may tick several classes and
utterances have 3, 4 or more raters. The generalisation used here is the standard
"fractional vote" one: a listener who ticks m classes gives each a vote of 1/m. Observed
agreement of an item is the mean, over ordered pairs of *different* raters, of the overlap of
their vote vectors (the probability that one class drawn from each rater's choices matches);
chance agreement is ``sum_c p_c**2`` with ``p_c`` the overall share of class ``c``. With one
label per rater and a fixed number of raters this is exactly Fleiss (1971), which the tests
check on his published table.
"""

from __future__ import annotations

import numpy as np

from perserbench.data.corpus import Corpus


def fleiss_kappa_from_votes(item: np.ndarray, votes: np.ndarray) -> float:
    """Kappa from annotation rows: ``item[a]`` is the item of row ``a`` and ``votes[a]`` its
    label vector (multi-hot or counts). Items with fewer than two raters carry no agreement
    information and are skipped."""
    item = np.asarray(item)
    votes = np.asarray(votes, dtype=float)
    chosen = votes.sum(axis=1, keepdims=True)
    keep_rows = chosen[:, 0] > 0
    item, votes = item[keep_rows], votes[keep_rows] / chosen[keep_rows]
    items, local = np.unique(item, return_inverse=True)
    n_raters = np.bincount(local, minlength=len(items)).astype(float)
    totals = np.zeros((len(items), votes.shape[1]))
    np.add.at(totals, local, votes)
    self_overlap = np.bincount(local, weights=(votes**2).sum(axis=1), minlength=len(items))
    rated = n_raters >= 2
    if not rated.any():
        raise ValueError("Fleiss' kappa needs at least one item with two or more raters")
    n = n_raters[rated]
    observed = ((totals[rated] ** 2).sum(axis=1) - self_overlap[rated]) / (n * (n - 1))
    shares = totals[rated].sum(axis=0) / n.sum()
    chance = float((shares**2).sum())
    return float((observed.mean() - chance) / (1.0 - chance))


def fleiss_kappa(corpus: Corpus) -> float:
    """Fleiss' kappa of a corpus's listeners over its vocabulary (fractional multi-label votes)."""
    ann = corpus.annotations
    return fleiss_kappa_from_votes(ann.utterance, ann.labels)
