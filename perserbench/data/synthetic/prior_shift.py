"""``prior-shift``: listeners who hear alike and differ only in base rates and thresholds.

The narrowest kind of personal difference, and the easiest to learn from a few labels: every
listener reads the same evidence ``p(k | u) = softmax(similarity_u / EVIDENCE_TEMPERATURE)``;
what differs is

* **base rates**: a personal log-prior ``b_j`` [C] shifts the primary choice,
  ``π_j(u) ∝ p(· | u) · exp(b_j)`` (label shift: the same likelihood under another prior);
* **decision threshold**: a personal threshold ``t_j`` on relative evidence decides how
  readily the listener ticks extra classes: a non-primary class is ticked with probability
  ``EXTRA_MAX · sigmoid((π_c / max π - t_j) / THRESHOLD_WIDTH)``.

No confusion pattern, no temperature: a method that learns a class-bias and a threshold per
listener captures all of it. The uniform control gives every listener ``b = 0`` and the mean
threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perserbench.data.synthetic.perception import (
    ListenerModel,
    population_names,
    relative_evidence,
    softmax,
)
from perserbench.data.synthetic.world import LABELS

EVIDENCE_TEMPERATURE = 1.6  # > 1 blurs perception: the main knob of agreement (kappa)
BASE_RATE_SPREAD = 1.5  # std of a listener's log-prior per class (centred per listener)
THRESHOLDS = (0.3, 0.9)  # range of personal thresholds on relative evidence
UNIFORM_THRESHOLD = 0.6
THRESHOLD_WIDTH = 0.08  # softness of the threshold
EXTRA_MAX = 0.5  # probability of an extra tick for a class far above the threshold


@dataclass(frozen=True)
class PriorShiftModel(ListenerModel):
    """Personal log-prior [J, C] and threshold [J] over shared evidence."""

    log_prior: np.ndarray  # [J, C]
    threshold: np.ndarray  # [J]
    uniform: bool = False

    def primary_proba(self, listener: str, utterances: np.ndarray) -> np.ndarray:
        scores = self.similarity[np.asarray(utterances)] / EVIDENCE_TEMPERATURE
        return softmax(scores + self.log_prior[self.index(listener)])

    def secondary_proba(self, listener: str, primary: np.ndarray) -> np.ndarray:
        return threshold_ticks(self.threshold[self.index(listener)], primary)

    def every_listener_proba(self, utterances: np.ndarray,
                             members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        j = slice(None) if members is None else members
        scores = self.similarity[np.asarray(utterances)] / EVIDENCE_TEMPERATURE
        pi = softmax(scores[None] + self.log_prior[j, None, :])
        return pi, threshold_ticks(self.threshold[j, None, None], pi)

    def draw_population(self, rng: np.random.Generator, n: int) -> PriorShiftModel:
        """Fresh log-priors and thresholds: the generator has no corpus-level parameters."""
        return draw_prior_shift(rng, self.similarity, population_names(n), self.uniform)


def threshold_ticks(threshold: np.ndarray | float, primary: np.ndarray) -> np.ndarray:
    """Secondary tick probabilities: ``EXTRA_MAX`` times a soft step of the relative evidence at
    the listener's ``threshold`` (a number with ``primary`` [n, C], or [J, 1, 1] with [J, n, C])."""
    margin = (relative_evidence(primary) - threshold) / THRESHOLD_WIDTH
    return EXTRA_MAX / (1.0 + np.exp(-margin))


def draw_prior_shift(rng: np.random.Generator, similarity: np.ndarray, names: tuple[str, ...],
                     uniform: bool) -> PriorShiftModel:
    """The listeners of the ``prior-shift`` generator. Parameters are drawn also for the
    uniform control, so it keeps the same random stream (the same raters per utterance)."""
    n, c = len(names), len(LABELS)
    log_prior = BASE_RATE_SPREAD * rng.normal(size=(n, c))
    log_prior -= log_prior.mean(axis=1, keepdims=True)
    threshold = rng.uniform(*THRESHOLDS, size=n)
    if uniform:
        log_prior = np.zeros((n, c))
        threshold = np.full(n, UNIFORM_THRESHOLD)
    return PriorShiftModel(similarity, names, ("individual",) * n, log_prior, threshold, uniform)
