"""The world every synthetic corpus shares: utterances, their latent emotion states, features.

Why separate from perception: the generators (:mod:`.styles`, :mod:`.confusion`,
:mod:`.prior_shift`) differ only in how listeners turn an utterance's latent state into labels.
Drawing the world first, from the same seeded stream, gives every generator the same audio for
a seed, so a difference between two generators' tasks is a difference of perception alone.

1. **Utterances.** Five sessions × two speakers (F, M), like IEMOCAP. Each utterance has an
   intended emotion (IEMOCAP-like class prior), an intensity, and a latent emotion state
   ``z = intensity · prototype[emotion] + ambiguity noise``. Prototypes of related classes
   overlap (angry~frustrated, happy~excited, neutral~sad), which is where listeners disagree.
2. **Features** ``[N, layers, dim]`` (default 3 × 768): a fixed random nonlinear map of ``z``
   and of nuisance factors, plus a per-speaker offset (so held-out speakers are a real domain
   shift) and per-layer noise (the middle layer is the most informative, as in SSL upstreams).

Two ways to draw the features. The default draws them in memory, layer by layer, from the
corpus's stream: the corpus the board is built on, value for value. A *chunked* draw (float16
storage, for MSP-Podcast-sized corpora: 150,000 × 25 × 1024 is 7.7 GB) draws every layer's map
from the stream, then each chunk of :data:`CHUNK_ROWS` utterances' noise from a child seed of
its own (the maps come from a child seed too, so listeners and labels do not depend on the
feature shape), so chunk ``c`` is a pure function of the corpus and ``c``: it can be computed and
written to disk alone, in any order, and never needs the whole array in memory
(:class:`FeatureRecipe`).

Listeners see an utterance through ``similarity = SCORE_SCALE · z · prototypesᵀ`` [N, C], the
evidence for each class; features are a noisy function of ``z``, so no method sees more of an
utterance than the listener models do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perserbench.data.corpus import Utterance

LABELS = ("neutral", "happy", "sad", "angry", "frustrated", "excited")
NEUTRAL, HAPPY, SAD, ANGRY, FRUSTRATED, EXCITED = range(len(LABELS))
# IEMOCAP-like prior of intended emotions (frustration and neutral dominate, happy is rare).
CLASS_PRIOR = np.array([0.24, 0.08, 0.14, 0.13, 0.24, 0.17])
SESSIONS = 5
SPEAKERS = 2 * SESSIONS  # one F and one M speaker per session
UTTERANCES = 2400  # the default size: 240 per speaker
LAYERS, DIM, HIDDEN, NUISANCE = 3, 768, 48, 8
LAYER_NOISE = (0.6, 0.3, 0.45)  # first, middle, last layer's noise: the middle layer is the cleanest
CHUNK_ROWS = 512  # utterances per chunk of a chunked draw (part of its draw order)
SPEAKER_OFFSET = 0.3
SCORE_SCALE = 7.0  # sharpness of perception; the main knob of agreement (kappa)
AMBIGUITY = 0.3  # spread of the latent state around its intended prototype
# Pairs of classes whose prototypes overlap (and weight of the overlap).
RELATED = ((HAPPY, EXCITED, 0.6), (ANGRY, FRUSTRATED, 0.6), (NEUTRAL, SAD, 0.4), (NEUTRAL, FRUSTRATED, 0.3))


def prototypes() -> np.ndarray:
    """Unit class prototypes in a 6-d emotion space; related classes overlap."""
    p = np.eye(len(LABELS))
    for a, b, w in RELATED:
        p[a, b] = p[b, a] = w
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def layer_noise(layers: int) -> np.ndarray:
    """Noise scale per layer: :data:`LAYER_NOISE` at the first, middle and last layer,
    linearly in between (exactly :data:`LAYER_NOISE` for 3 layers)."""
    return np.interp(np.linspace(0.0, 1.0, layers), [0.0, 0.5, 1.0], LAYER_NOISE)


@dataclass(frozen=True)
class FeatureRecipe:
    """Everything a chunked draw's features are computed from; :meth:`chunk` is a pure
    function of the recipe and the chunk index."""

    hidden: np.ndarray  # [N, HIDDEN]: the nonlinear map of (z, nuisance)
    speaker_index: np.ndarray  # int [N]
    offsets: np.ndarray  # [speakers, L, D]
    w_out: np.ndarray  # [HIDDEN, L, D]
    noise: np.ndarray  # [L]: noise scale per layer
    noise_seed: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.hidden), self.w_out.shape[1], self.w_out.shape[2])

    @property
    def chunks(self) -> int:
        return -(-len(self.hidden) // CHUNK_ROWS)

    def chunk(self, c: int) -> np.ndarray:
        """float32 features of utterances ``[c·CHUNK_ROWS, (c+1)·CHUNK_ROWS)``."""
        start, stop = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, len(self.hidden))
        n, layers, dim = stop - start, self.w_out.shape[1], self.w_out.shape[2]
        rng = np.random.default_rng([self.noise_seed, c + 1])  # [seed, 0] drew the maps
        out = (self.hidden[start:stop] @ self.w_out.reshape(HIDDEN, -1)).reshape(n, layers, dim)
        out += self.offsets[self.speaker_index[start:stop]]
        out += rng.normal(size=(n, layers, dim)) * self.noise[:, None]
        return out.astype(np.float32)

    def array(self, dtype: str = "float32") -> np.ndarray:
        """All chunks in memory (small corpora and tests; the cache writes them one by one)."""
        return np.concatenate([self.chunk(c) for c in range(self.chunks)]).astype(dtype)


@dataclass(frozen=True)
class World:
    """The utterances of one seed and what listeners and methods can know of them.
    ``features`` is ``None`` for a chunked draw; ``recipe`` computes them then."""

    utterances: tuple[Utterance, ...]
    emotion: np.ndarray  # int [N]: intended emotion
    similarity: np.ndarray  # [N, C]: evidence for each class (what listener models read)
    features: np.ndarray | None  # float32 [N, layers, dim]: what methods read
    recipe: FeatureRecipe | None = None


def draw_world(rng: np.random.Generator, n_utterances: int = UTTERANCES, layers: int = LAYERS, dim: int = DIM,
               chunked: bool = False) -> World:
    """Utterances, latent states and features, drawn first from the corpus's stream (the
    order of draws is part of the corpus: changing it changes every seed's corpus).
    ``n_utterances`` (a multiple of :data:`SPEAKERS`) is split evenly over the speakers;
    ``chunked`` gives a :class:`FeatureRecipe` instead of the features (see the module)."""
    per_speaker = n_utterances // SPEAKERS
    protos = prototypes()
    c = len(LABELS)

    utterances, speaker_index = [], []
    speakers = [f"Ses{s:02d}_{g}" for s in range(1, SESSIONS + 1) for g in "FM"]
    for k, spk in enumerate(speakers):
        for i in range(per_speaker):
            duration = float(np.round(rng.gamma(4.0, 1.1) + 0.8, 2))
            utterances.append(Utterance(f"{spk}_{i:04d}", spk, spk[:5], None, duration))
            speaker_index.append(k)
    n = len(utterances)
    speaker_index = np.asarray(speaker_index)

    emotion = rng.choice(c, size=n, p=CLASS_PRIOR)
    intensity = rng.uniform(0.6, 1.4, size=n)
    z = intensity[:, None] * protos[emotion] + AMBIGUITY * rng.normal(size=(n, c))
    similarity = SCORE_SCALE * (z @ protos.T)

    # Features: fixed random nonlinear map of (z, nuisance) + speaker offset + layer noise.
    nuisance = rng.normal(size=(n, NUISANCE))
    w_in = rng.normal(size=(c + NUISANCE, HIDDEN)) / np.sqrt(c + NUISANCE)
    w_in[c:] *= 0.6  # nuisance factors are weaker than emotion
    hidden = np.tanh(np.concatenate([z, nuisance], axis=1) @ w_in * 1.5)
    noise_scale = layer_noise(layers)
    if chunked:  # one draw from the stream: listeners and labels do not depend on layers or dim
        seed = int(rng.integers(2**63))
        child = np.random.default_rng([seed, 0])
        offsets = SPEAKER_OFFSET * child.normal(size=(len(speakers), layers, dim))
        w_out = np.stack([child.normal(size=(HIDDEN, dim)) / np.sqrt(HIDDEN) for _ in range(layers)], axis=1)
        recipe = FeatureRecipe(hidden, speaker_index, offsets, w_out, noise_scale, seed)
        return World(tuple(utterances), emotion, similarity, None, recipe)
    offsets = SPEAKER_OFFSET * rng.normal(size=(len(speakers), layers, dim))
    features = np.empty((n, layers, dim), dtype=np.float32)
    for layer in range(layers):
        w_out = rng.normal(size=(HIDDEN, dim)) / np.sqrt(HIDDEN)
        noise = noise_scale[layer] * rng.normal(size=(n, dim))
        features[:, layer] = hidden @ w_out + offsets[speaker_index, layer] + noise
    return World(tuple(utterances), emotion, similarity, features)
