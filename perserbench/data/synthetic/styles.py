"""``styles``: listeners perceive through one of four hand-built perception styles (the first
generator, and the default; its corpus is unchanged since the benchmark's first results).

Each of the 16 listeners belongs to a style (literal; anger-sensitive; neutral-leaning;
enthusiast), given as a class-confusion matrix and a class bias *in score space*, plus an
individual deviation of both, a personal decisiveness (temperature) and a personal tendency to
tick secondary classes. For a listener and an utterance the class scores are
``s = similarity @ confusion + bias``; the primary label is drawn from ``softmax(s / temperature)``
and every other class is added with probability ``ρ · (π_c / max π)²``.
The uniform control gives every listener the literal style, temperature 1 and ρ = 0.25.
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
from perserbench.data.synthetic.world import ANGRY, EXCITED, FRUSTRATED, HAPPY, LABELS, NEUTRAL, SAD

STYLES = ("literal", "anger-sensitive", "neutral-leaning", "enthusiast")


def style(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(confusion [C, C], bias [C]) of a perception style: row = evidence for a class,
    column = the class the listener reports."""
    confusion, bias = np.eye(len(LABELS)), np.zeros(len(LABELS))
    if name == "anger-sensitive":  # hears frustration as anger, rarely says neutral
        confusion[FRUSTRATED, ANGRY], confusion[FRUSTRATED, FRUSTRATED] = 0.9, 0.4
        confusion[SAD, FRUSTRATED] = 0.4
        bias[NEUTRAL], bias[ANGRY] = -0.4, 0.3
    elif name == "neutral-leaning":  # calls mild emotion neutral, hears little excitement
        confusion[HAPPY, NEUTRAL], confusion[FRUSTRATED, NEUTRAL], confusion[SAD, NEUTRAL] = 0.5, 0.5, 0.4
        bias[NEUTRAL], bias[EXCITED], bias[ANGRY] = 0.6, -0.6, -0.3
    elif name == "enthusiast":  # hears happiness as excitement, seldom neutral
        confusion[HAPPY, EXCITED], confusion[HAPPY, HAPPY] = 0.9, 0.4
        confusion[NEUTRAL, HAPPY], confusion[NEUTRAL, NEUTRAL] = 0.5, 0.6
        bias[NEUTRAL], bias[EXCITED], bias[SAD] = -0.6, 0.4, -0.3
    return confusion, bias


@dataclass(frozen=True)
class StylesModel(ListenerModel):
    """Score-space confusion, bias and temperature per listener; secondary rate ρ."""

    confusion: np.ndarray  # [J, C, C]
    bias: np.ndarray  # [J, C]
    temperature: np.ndarray  # [J]
    secondary: np.ndarray  # [J]
    uniform: bool = False

    def primary_proba(self, listener: str, utterances: np.ndarray) -> np.ndarray:
        j = self.index(listener)
        scores = self.similarity[np.asarray(utterances)] @ self.confusion[j] + self.bias[j]
        return softmax(scores / self.temperature[j])

    def secondary_proba(self, listener: str, primary: np.ndarray) -> np.ndarray:
        return squared_ratio_ticks(self.secondary[self.index(listener)], primary)

    def every_listener_proba(self, utterances: np.ndarray,
                             members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        j = slice(None) if members is None else members
        scores = self.similarity[np.asarray(utterances)][None] @ self.confusion[j]
        pi = softmax((scores + self.bias[j, None, :]) / self.temperature[j, None, None])
        return pi, squared_ratio_ticks(self.secondary[j, None, None], pi)

    def draw_population(self, rng: np.random.Generator, n: int) -> StylesModel:
        """The styles in turn (as the corpus assigns them), each with fresh individual deviation."""
        return draw_styles(rng, self.similarity, population_names(n), self.uniform)


def draw_styles(rng: np.random.Generator, similarity: np.ndarray, names: tuple[str, ...],
                uniform: bool) -> StylesModel:
    """The listeners of the ``styles`` generator. The uniform control draws nothing from
    ``rng`` (as it always has: the draw order is part of the published corpora)."""
    n = len(names)
    if uniform:  # one shared perception model: personalization has nothing to learn
        confusion, bias = style("literal")
        return StylesModel(similarity, names, ("literal",) * n, np.repeat(confusion[None], n, 0),
                           np.repeat(bias[None], n, 0), np.ones(n), np.full(n, 0.25), uniform=True)
    styles = tuple(STYLES[j % len(STYLES)] for j in range(n))
    base = [style(s) for s in styles]
    c = len(LABELS)
    confusion = np.stack([cm for cm, _ in base]) + 0.12 * rng.normal(size=(n, c, c))
    bias = np.stack([b for _, b in base]) + 0.25 * rng.normal(size=(n, c))
    temperature = np.exp(0.2 * rng.normal(size=n))
    secondary = rng.uniform(0.1, 0.4, size=n)
    return StylesModel(similarity, names, styles, confusion, bias, temperature, secondary)
