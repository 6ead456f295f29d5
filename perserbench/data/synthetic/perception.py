"""What every listener model of the synthetic corpus is: a primary choice and extra ticks.

Every generator describes a listener by two distributions over the classes of an utterance:

* the **primary** label, one class drawn from ``π(u)`` (:meth:`ListenerModel.primary_proba`);
* **secondary** labels: every other class ``c`` is ticked independently with probability
  ``q_c(u)`` (:meth:`ListenerModel.secondary_proba`), a function of ``π(u)`` only.

The probability that the listener ticks class ``c`` is therefore exactly
``π_c + (1 - π_c) q_c`` (:meth:`ListenerModel.listener_proba`), and labels of different
utterances are independent given the utterances' latent states. That is what the ``oracle``
reference relies on: it predicts with these exact marginals and decides each class optimally
for the metric (:mod:`perserbench.expected_f1`), so no method seeing only features can beat it in
expectation. Labels are drawn by :func:`sample_labels`, the one sampler all generators share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from perserbench.errors import PerserbenchError


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large scores."""
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class ListenerModel(ABC):
    """The generative model of one corpus's listeners. Read only by the ``oracle`` reference
    (and the tests), never by a method under test. Class order is the corpus vocabulary."""

    similarity: np.ndarray  # [N, C] evidence for each class per utterance (from the world)
    listeners: tuple[str, ...]
    groups: tuple[str, ...]  # per listener: the style or school it was drawn from

    def index(self, listener: str) -> int:
        """Position of ``listener`` in the parameter arrays."""
        try:
            return self.listeners.index(listener)
        except ValueError:
            raise PerserbenchError(f"listener {listener!r} is not part of the synthetic corpus") from None

    @abstractmethod
    def primary_proba(self, listener: str, utterances: np.ndarray) -> np.ndarray:
        """Distribution of the listener's primary label per utterance, [n, C]."""

    @abstractmethod
    def secondary_proba(self, listener: str, primary: np.ndarray) -> np.ndarray:
        """Probability of ticking each class as a secondary label (given it is not primary),
        from the primary distribution ``primary`` [n, C]."""

    def listener_proba(self, listener: str, utterances: np.ndarray) -> np.ndarray:
        """P(listener ticks class c) per utterance, [n, C] — the exact marginal."""
        pi = self.primary_proba(listener, utterances)
        return marginal(pi, self.secondary_proba(listener, pi))

    def every_listener_proba(self, utterances: np.ndarray,
                             members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(primary π, secondary q) of every listener (or of the listener indices ``members``)
        at once, each [J, n, C]: what :meth:`primary_proba` and :meth:`secondary_proba` give
        listener by listener (equal up to float rounding; the label sampler keeps using those).
        Generators vectorize it, because the ``bayes-oracle`` reference evaluates thousands of
        population listeners."""
        names = [self.listeners[j] for j in (range(len(self.listeners)) if members is None else members)]
        pi = np.stack([self.primary_proba(name, utterances) for name in names])
        return pi, np.stack([self.secondary_proba(name, p) for name, p in zip(names, pi)])

    def every_listener_log_likelihood(self, utterances: np.ndarray, labels: np.ndarray,
                                      members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(log P(listener j gives exactly the label set ``labels[i]`` to ``utterances[i]``)
        [J, n], each listener's class marginals [J, n, C]), for every listener or the indices
        ``members``.

        What :func:`sample_labels` draws: one primary class ``k`` (necessarily ticked) and every
        other class independently, so P(y) = Σ_{k: y_k = 1} π_k · Π_{c ≠ k} q_c^{y_c} (1 − q_c)^{1 − y_c}."""
        y = np.asarray(labels, dtype=bool)
        pi, q = self.every_listener_proba(utterances, members)
        marginals = marginal(pi, q)
        q = np.clip(q, 1e-12, 1.0 - 1e-12)
        # Π_{c ≠ k} B_c = Π_c B_c / B_k with B_k = q_k for a ticked k: P(y) = Π_c B_c · Σ_{k ticked} π_k / q_k
        every_secondary = np.where(y, np.log(q), np.log1p(-q)).sum(axis=-1)
        with np.errstate(divide="ignore"):  # no class ticked: impossible, log 0 = -inf
            return every_secondary + np.log((np.where(y, pi, 0.0) / q).sum(axis=-1)), marginals

    @abstractmethod
    def draw_population(self, rng: np.random.Generator, n: int) -> ListenerModel:
        """``n`` new listeners drawn from the distribution this corpus's listeners were drawn
        from, its corpus-level parameters (styles, schools) held fixed, on the same utterances:
        what someone who knows the generator, but not the listener, believes about a listener."""


def marginal(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """P(a class is ticked): it is the primary label, or else a secondary tick,
    ``π + (1 − π) q`` (shapes as given)."""
    return primary + (1.0 - primary) * secondary


def relative_evidence(primary: np.ndarray) -> np.ndarray:
    """Each class's primary probability over that of the most probable class, [..., C]: what
    every generator's secondary ticks depend on."""
    return primary / primary.max(axis=-1, keepdims=True)


def squared_ratio_ticks(rate: np.ndarray | float, primary: np.ndarray) -> np.ndarray:
    """Secondary tick probabilities ``rate · (π_c / max π)²`` (styles and confusion) of one
    listener (``rate`` a number, ``primary`` [n, C]) or of many (``rate`` [J, 1, 1], ``primary``
    [J, n, C]): one formula for the sampler's per-listener form and the vectorized one."""
    return rate * relative_evidence(primary) ** 2


def population_names(n: int) -> tuple[str, ...]:
    """Names of the hypothetical listeners of :meth:`ListenerModel.draw_population`."""
    return tuple(f"population-{i}" for i in range(n))


def sample_labels(rng: np.random.Generator, model: ListenerModel, utterance: np.ndarray,
                  listener: np.ndarray) -> np.ndarray:
    """Multi-hot labels [A, C] of annotation rows (``utterance[a]`` rated by listener index
    ``listener[a]``): one primary class from :meth:`~ListenerModel.primary_proba` plus
    independent secondary ticks. Listeners are drawn in order, each with one uniform per row
    for the primary and one per (row, class) for the secondaries."""
    c = model.similarity.shape[1]
    labels = np.zeros((len(utterance), c), dtype=bool)
    for j, name in enumerate(model.listeners):
        mine = np.flatnonzero(listener == j)
        pi = model.primary_proba(name, utterance[mine])
        primary = (rng.random((len(mine), 1)) > np.cumsum(pi, axis=1)).sum(axis=1).clip(max=c - 1)
        picked = rng.random((len(mine), c)) < model.secondary_proba(name, pi)
        picked[np.arange(len(mine)), primary] = True
        labels[mine] = picked
    return labels
