"""``confusion``: Dawid–Skene listeners — a personal class-confusion matrix per listener.

The crowd-sourcing model of annotator noise (Dawid & Skene, 1979): a listener who perceives
class ``k`` reports class ``l`` with probability ``M_j[k, l]``. Here:

* **Perception.** For utterance ``u`` the perceived class is drawn from the evidence,
  ``p(k | u) = softmax(similarity_u / EVIDENCE_TEMPERATURE)``, once per annotation. (Not once
  per utterance: with a class shared by all raters, other listeners' labels would tell a
  method more about a listener's answer than the audio does, and the oracle, which knows the
  audio's latent state but not that class, would no longer be a ceiling in the ``seen``
  scenario. Drawn per annotation, listeners are independent given the audio.)
* **Schools.** A few schools of listening, each a random confusion pattern: a strong diagonal,
  extra confusion between related classes, and school-specific noise in log space, so one
  school hears frustration as anger and another anger as frustration. Schools are drawn from
  the corpus seed, so a development corpus (another seed) has other schools as well as other
  listeners.
* **Listeners.** A school's log-confusion plus individual noise and a personal class bias
  (one log-weight per reported class, added to every row), normalised per row into ``M_j``;
  a personal multi-label rate ``ρ_j``: every non-primary class is ticked with probability
  ``ρ_j · (π_c / max π)²`` (as in ``styles``).

The primary label therefore has the distribution ``π_j(u) = p(· | u) @ M_j``. The uniform
control gives every listener the schools' common pattern (no school noise, no individual
noise, no bias) and the mean multi-label rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perserbench.data.synthetic.perception import (
    ListenerModel,
    population_names,
    softmax,
    squared_ratio_ticks,
)
from perserbench.data.synthetic.world import LABELS, RELATED

SCHOOLS = 3
EVIDENCE_TEMPERATURE = 0.8  # sharpness of perception: the main knob of agreement (kappa)
DIAGONAL = 5.0  # log-weight of reporting what one perceives (vs 0 for an unrelated class)
RELATED_CONFUSION = 1.0  # extra log-weight between related classes (angry~frustrated, ...)
SCHOOL_SPREAD = 0.3  # std of a school's diffuse log-confusion noise
SWAPS = 3  # per school: (perceived → reported) pairs confused about as often as not
SWAP_STRENGTH = 5.0  # log-weight of a school's swap (= DIAGONAL: as often as the perceived class)
INDIVIDUAL_SPREAD = 0.35  # std of a listener's own log-confusion noise
BIAS_SPREAD = 0.7  # std of a listener's personal class bias (log-weight per reported class)
MULTI_LABEL = (0.05, 0.45)  # range of the personal multi-label rate ρ
UNIFORM_MULTI_LABEL = 0.25


def common_pattern() -> np.ndarray:
    """Log-confusion every school starts from: the diagonal plus related-class confusion."""
    c = len(LABELS)
    pattern = DIAGONAL * np.eye(c)
    for a, b, _ in RELATED:
        pattern[a, b] = pattern[b, a] = RELATED_CONFUSION
    return pattern


@dataclass(frozen=True)
class ConfusionModel(ListenerModel):
    """Row-stochastic confusion ``M_j`` [J, C, C] (perceived → reported) and multi-label rate."""

    confusion: np.ndarray  # [J, C, C]
    secondary: np.ndarray  # [J]
    schools: np.ndarray | None = None  # [S, C, C] the schools' log-confusion; None: uniform (no schools)

    def primary_proba(self, listener: str, utterances: np.ndarray) -> np.ndarray:
        perceived = softmax(self.similarity[np.asarray(utterances)] / EVIDENCE_TEMPERATURE)
        return perceived @ self.confusion[self.index(listener)]

    def secondary_proba(self, listener: str, primary: np.ndarray) -> np.ndarray:
        return squared_ratio_ticks(self.secondary[self.index(listener)], primary)

    def every_listener_proba(self, utterances: np.ndarray,
                             members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        j = slice(None) if members is None else members
        perceived = softmax(self.similarity[np.asarray(utterances)] / EVIDENCE_TEMPERATURE)
        pi = perceived[None] @ self.confusion[j]
        return pi, squared_ratio_ticks(self.secondary[j, None, None], pi)

    def draw_population(self, rng: np.random.Generator, n: int) -> ConfusionModel:
        """Members of this corpus's schools in turn, each with fresh individual noise, bias and
        multi-label rate (the uniform control: copies of the common pattern)."""
        if self.schools is None:
            return uniform_members(self.similarity, population_names(n))
        return school_members(rng, self.similarity, population_names(n), self.schools)


def school_members(rng: np.random.Generator, similarity: np.ndarray, names: tuple[str, ...],
                   schools: np.ndarray) -> ConfusionModel:
    """Listeners of the given schools in turn (listener j in school j mod S), with individual
    log-confusion noise, a personal class bias and a multi-label rate drawn in that order."""
    n, c = len(names), schools.shape[-1]
    school_of = np.arange(n) % len(schools)
    log_confusion = (schools[school_of] + INDIVIDUAL_SPREAD * rng.normal(size=(n, c, c))
                     + BIAS_SPREAD * rng.normal(size=(n, 1, c)))
    secondary = rng.uniform(*MULTI_LABEL, size=n)
    groups = tuple(f"school-{s + 1}" for s in school_of)
    return ConfusionModel(similarity, names, groups, softmax(log_confusion), secondary, schools)


def uniform_members(similarity: np.ndarray, names: tuple[str, ...]) -> ConfusionModel:
    """The uniform control's listeners: every one the common pattern and multi-label rate."""
    n = len(names)
    return ConfusionModel(similarity, names, ("common",) * n, softmax(np.repeat(common_pattern()[None], n, 0)),
                          np.full(n, UNIFORM_MULTI_LABEL))


def draw_confusion(rng: np.random.Generator, similarity: np.ndarray, names: tuple[str, ...],
                   uniform: bool) -> ConfusionModel:
    """The listeners of the ``confusion`` generator. Parameters are drawn also for the
    uniform control, so it keeps the same random stream (the same raters per utterance)."""
    c = len(LABELS)
    pattern = common_pattern()
    schools = pattern + SCHOOL_SPREAD * rng.normal(size=(SCHOOLS, c, c))
    off_diagonal = np.flatnonzero(~np.eye(c, dtype=bool))
    for school in schools:
        school.flat[rng.choice(off_diagonal, size=SWAPS, replace=False)] += SWAP_STRENGTH
    members = school_members(rng, similarity, names, schools)  # drawn for the control too: same stream
    return uniform_members(similarity, names) if uniform else members
