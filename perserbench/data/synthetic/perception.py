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
        q = self.secondary_proba(listener, pi)
        return pi + (1.0 - pi) * q


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
