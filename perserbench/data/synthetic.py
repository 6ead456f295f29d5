"""The embedded default corpus: a calibrated, IEMOCAP-like synthetic listener corpus.

Why synthetic: a benchmark must run on a fresh machine with no licensed data, and its
machinery must be checkable against a known truth. Here the truth is known: every listener
perceives through a personal model, so the ``oracle`` method can predict with it and reports
can show the ceiling, and the ``uniform`` variant (all listeners identical) is a sanity check
in which personalization must give nothing.

Generative story (all draws from one seeded ``numpy`` generator, so a seed fixes everything):

1. **Utterances.** Five sessions × two speakers (F, M), like IEMOCAP. Each utterance has an
   intended emotion (IEMOCAP-like class prior), an intensity, and a latent emotion state
   ``z = intensity · prototype[emotion] + ambiguity noise``. Prototypes of related classes
   overlap (angry~frustrated, happy~excited, neutral~sad), which is where listeners disagree.
2. **Features** ``[N, 3 layers, 768]``: a fixed random nonlinear map of ``z`` and of nuisance
   factors, plus a per-speaker offset (so held-out speakers are a real domain shift) and
   per-layer noise (the middle layer is the most informative, as in SSL upstreams).
3. **Listeners** (16) each belong to one of four perception *styles* (literal; anger-sensitive;
   neutral-leaning; enthusiast), given as a class-confusion matrix and a class bias, plus an
   individual deviation of both, a personal decisiveness (temperature) and a personal tendency
   to tick secondary classes. For a listener and an utterance, class scores are
   ``s = (z · prototypesᵀ) @ confusion + bias``; the primary label is drawn from
   ``softmax(s / temperature)`` and every other class is added independently with probability
   ``ρ · (π_c / max π)²``. The marginal probability that the listener ticks class c is
   therefore ``π_c + (1 - π_c) q_c``: :meth:`SyntheticTruth.listener_proba` returns exactly
   that, and the ``oracle`` predicts with it.
4. **Annotations.** Each utterance gets 3–5 raters (mean 3.5, as in IEMOCAP), drawn with
   per-listener activity weights, so listeners label different amounts.

Calibration (measured by ``perserbench data inspect synthetic`` and checked in the tests):
Fleiss' kappa of the default corpus lies in IEMOCAP's range for categorical labels
(about 0.3–0.45), the uniform variant's is higher, and the oracle beats the consensus model
clearly on ``synthetic`` but not on ``synthetic-uniform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from perserbench.data import register_corpus
from perserbench.data.corpus import Annotations, Corpus, Utterance
from perserbench.data.loading import parse_bool, parse_int
from perserbench.errors import PerserbenchError

LABELS = ("neutral", "happy", "sad", "angry", "frustrated", "excited")
NEUTRAL, HAPPY, SAD, ANGRY, FRUSTRATED, EXCITED = range(len(LABELS))
# IEMOCAP-like prior of intended emotions (frustration and neutral dominate, happy is rare).
CLASS_PRIOR = np.array([0.24, 0.08, 0.14, 0.13, 0.24, 0.17])
SESSIONS = 5
UTTERANCES_PER_SPEAKER = 240  # 5 sessions × 2 speakers × 240 = 2400 utterances
N_LISTENERS = 16
RATERS_PER_UTTERANCE = ((3, 0.6), (4, 0.3), (5, 0.1))  # mean 3.5
LAYERS, DIM, HIDDEN, NUISANCE = 3, 768, 48, 8
LAYER_NOISE = (0.6, 0.3, 0.45)  # the middle layer is the cleanest
SPEAKER_OFFSET = 0.3
SCORE_SCALE = 7.0  # sharpness of perception; the main knob of agreement (kappa)
AMBIGUITY = 0.3  # spread of the latent state around its intended prototype

STYLES = ("literal", "anger-sensitive", "neutral-leaning", "enthusiast")


def _prototypes() -> np.ndarray:
    """Unit class prototypes in a 6-d emotion space; related classes overlap."""
    p = np.eye(len(LABELS))
    for a, b, w in ((HAPPY, EXCITED, 0.6), (ANGRY, FRUSTRATED, 0.6), (NEUTRAL, SAD, 0.4), (NEUTRAL, FRUSTRATED, 0.3)):
        p[a, b] = p[b, a] = w
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _style(name: str) -> tuple[np.ndarray, np.ndarray]:
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
class SyntheticTruth:
    """The generative model: latent states and every listener's perception parameters.

    Read only by the ``oracle`` reference (through :meth:`listener_proba`), never by a method
    under test. Class order is the corpus vocabulary (:data:`LABELS`).
    """

    similarity: np.ndarray  # [N, C] latent state projected on the class prototypes
    listeners: tuple[str, ...]
    styles: tuple[str, ...]  # per listener
    confusion: np.ndarray  # [J, C, C]
    bias: np.ndarray  # [J, C]
    temperature: np.ndarray  # [J]
    secondary: np.ndarray  # [J]

    def _index(self, listener: str) -> int:
        try:
            return self.listeners.index(listener)
        except ValueError:
            raise PerserbenchError(f"listener {listener!r} is not part of the synthetic corpus") from None

    def primary_proba(self, listener: str, utterances: np.ndarray) -> np.ndarray:
        """Distribution of the listener's primary label per utterance, [n, C]."""
        j = self._index(listener)
        scores = self.similarity[np.asarray(utterances)] @ self.confusion[j] + self.bias[j]
        scores = scores / self.temperature[j]
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def secondary_proba(self, listener: str, primary: np.ndarray) -> np.ndarray:
        """Probability of ticking each class as a secondary label (given it is not primary)."""
        ratio = primary / primary.max(axis=1, keepdims=True)
        return self.secondary[self._index(listener)] * ratio**2

    def listener_proba(self, listener: str, utterances: np.ndarray) -> np.ndarray:
        """P(listener ticks class c) per utterance, [n, C] — the exact marginal."""
        pi = self.primary_proba(listener, utterances)
        q = self.secondary_proba(listener, pi)
        return pi + (1.0 - pi) * q


def _listener_parameters(rng: np.random.Generator, uniform: bool):
    names = tuple(f"E{j + 1:02d}" for j in range(N_LISTENERS))
    if uniform:  # one shared perception model: personalization has nothing to learn
        confusion, bias = _style("literal")
        styles = ("literal",) * N_LISTENERS
        return (names, styles, np.repeat(confusion[None], N_LISTENERS, 0), np.repeat(bias[None], N_LISTENERS, 0),
                np.ones(N_LISTENERS), np.full(N_LISTENERS, 0.25))
    styles = tuple(STYLES[j % len(STYLES)] for j in range(N_LISTENERS))
    base = [_style(s) for s in styles]
    c = len(LABELS)
    confusion = np.stack([cm for cm, _ in base]) + 0.12 * rng.normal(size=(N_LISTENERS, c, c))
    bias = np.stack([b for _, b in base]) + 0.25 * rng.normal(size=(N_LISTENERS, c))
    temperature = np.exp(0.2 * rng.normal(size=N_LISTENERS))
    secondary = rng.uniform(0.1, 0.4, size=N_LISTENERS)
    return names, styles, confusion, bias, temperature, secondary


@lru_cache(maxsize=4)
def generate(seed: int = 0, uniform: bool = False) -> Corpus:
    """The synthetic corpus for ``seed`` (cached: tasks and tests share one instance; treat
    it as read-only)."""
    rng = np.random.default_rng(seed)
    prototypes = _prototypes()
    c = len(LABELS)

    utterances, speaker_index = [], []
    speakers = [f"Ses{s:02d}_{g}" for s in range(1, SESSIONS + 1) for g in "FM"]
    for k, spk in enumerate(speakers):
        for i in range(UTTERANCES_PER_SPEAKER):
            duration = float(np.round(rng.gamma(4.0, 1.1) + 0.8, 2))
            utterances.append(Utterance(f"{spk}_{i:04d}", spk, spk[:5], None, duration))
            speaker_index.append(k)
    n = len(utterances)
    speaker_index = np.asarray(speaker_index)

    emotion = rng.choice(c, size=n, p=CLASS_PRIOR)
    intensity = rng.uniform(0.6, 1.4, size=n)
    z = intensity[:, None] * prototypes[emotion] + AMBIGUITY * rng.normal(size=(n, c))
    similarity = SCORE_SCALE * (z @ prototypes.T)

    # Features: fixed random nonlinear map of (z, nuisance) + speaker offset + layer noise.
    nuisance = rng.normal(size=(n, NUISANCE))
    w_in = rng.normal(size=(c + NUISANCE, HIDDEN)) / np.sqrt(c + NUISANCE)
    w_in[c:] *= 0.6  # nuisance factors are weaker than emotion
    hidden = np.tanh(np.concatenate([z, nuisance], axis=1) @ w_in * 1.5)
    offsets = SPEAKER_OFFSET * rng.normal(size=(len(speakers), LAYERS, DIM))
    features = np.empty((n, LAYERS, DIM), dtype=np.float32)
    for layer in range(LAYERS):
        w_out = rng.normal(size=(HIDDEN, DIM)) / np.sqrt(HIDDEN)
        noise = LAYER_NOISE[layer] * rng.normal(size=(n, DIM))
        features[:, layer] = hidden @ w_out + offsets[speaker_index, layer] + noise

    names, styles, confusion, bias, temperature, secondary = _listener_parameters(rng, uniform)
    truth = SyntheticTruth(similarity, names, styles, confusion, bias, temperature, secondary)

    # Raters per utterance, drawn with per-listener activity weights.
    activity = rng.uniform(0.6, 1.4, size=N_LISTENERS)
    counts, probs = zip(*RATERS_PER_UTTERANCE)
    n_raters = rng.choice(counts, size=n, p=probs)
    rows_u, rows_j = [], []
    for u in range(n):
        chosen = rng.choice(N_LISTENERS, size=n_raters[u], replace=False, p=activity / activity.sum())
        rows_u.extend([u] * len(chosen))
        rows_j.extend(sorted(chosen.tolist()))
    rows_u, rows_j = np.asarray(rows_u), np.asarray(rows_j)

    labels = np.zeros((len(rows_u), c), dtype=bool)
    for j, name in enumerate(names):
        mine = np.flatnonzero(rows_j == j)
        pi = truth.primary_proba(name, rows_u[mine])
        primary = (rng.random((len(mine), 1)) > np.cumsum(pi, axis=1)).sum(axis=1).clip(max=c - 1)
        extra = rng.random((len(mine), c)) < truth.secondary_proba(name, pi)
        picked = extra
        picked[np.arange(len(mine)), primary] = True
        labels[mine] = picked

    annotations = Annotations(rows_u, np.array([names[j] for j in rows_j], dtype=object), labels)
    metadata = {
        "seed": seed,
        "uniform": uniform,
        "styles": dict(zip(names, styles)),
        "intended_emotion": emotion,
    }
    return Corpus("synthetic", LABELS, tuple(utterances), annotations, {"synthetic": features}, truth, metadata)


@register_corpus("synthetic")
def load_synthetic(seed: int | str = 0, uniform: bool | str = False) -> Corpus:
    """Loader entry point (task ``[corpus] options`` or ``--corpus-option``: ``seed``,
    ``uniform``; strings from the command line are accepted)."""
    return generate(parse_int(seed, "seed", minimum=0), parse_bool(uniform, "uniform"))
