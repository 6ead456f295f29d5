"""A listener as an annotator: one evidence model for everyone, a few numbers per listener.

``calibrate`` describes a listener by a transform of the consensus model's logits (54 numbers
for six classes), which 20 labels pin only loosely. This is the other way to describe one, by
how they *annotate*: every listener hears the same evidence ``e(u)`` and picks one primary
class from ``π = softmax(e(u) + b)``, then ticks every other class independently with
probability ``q_c = σ(α + β · log(π_c / max π))``. A listener is ``C + 2`` numbers: a
(centred) log-prior ``b`` on the primary choice ("rarely says neutral") and a tick curve
``(α, β)`` ("how readily they add less evident classes"). It cannot say "hears anger as
frustration"; the transform can, which is why ``calibrate`` pools the two (its
``annotator_weight``) instead of choosing one.

* **Fitting** (:func:`fit_annotator_model`): the evidence head (the board's head architecture)
  and every meta-train listener's numbers, jointly, by the likelihood of the label *set* each
  annotation holds (:func:`label_set_log_likelihood`), not by per-class BCE: one primary plus
  ticks is how a listener who must pick an emotion labels.
* **Population** (:meth:`AnnotatorModel.population`): an empirical-Bayes Gaussian over those
  numbers with the meta-train listeners' mean and spread, represented by ``members`` draws.
* **Posterior** (:class:`AnnotatorPosterior`): the support's label sets weigh the members
  (importance sampling; exact as the draws grow); predictions are the posterior mean of each
  class's marginal ``π + (1 − π) q``.
* **Decisions** (:func:`reference_thresholds`): per-class expected-F1 thresholds of the
  listener's posterior predictive on reference episodes of *meta-train* utterances, so they come
  from the support and the meta-train set alone, never from the query (DESIGN §2).

``benchmarks/annotator_model.py`` measures the model on its own (docs/generators.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from perserbench.episodes import MetaTrainSet
from perserbench.expected_f1 import optimal_thresholds
from perserbench.head import EmotionHead

EPOCHS = 8  # passes of the joint fit over the meta-train annotations
MEMBERS = 4000  # population listeners of the importance-sampled posterior (calibrate draws its own number)
REFERENCE_EPISODES = 20  # reference query sets of REFERENCE_QUERY meta-train utterances for the thresholds
REFERENCE_QUERY = 20
TICK_INIT = (-1.0, 1.0)  # (α, β) every meta-train listener starts from
BATCH = 256  # annotations per minibatch of the joint fit
PROBABILITY_FLOOR = 1e-9  # tick probabilities stay inside (0, 1), so their logs are finite
NEGLIGIBLE_WEIGHT = 1e-12  # posterior weight, relative to the heaviest member's, below which a member is dropped


def annotation_probabilities(scores: torch.Tensor, tick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(primary π, secondary tick probabilities q), each shaped as ``scores``, from primary
    scores ``e(u) + b`` [..., C] and tick curves ``tick`` = (α, β) [..., 2] whose leading
    dimensions broadcast against the scores' (one per item, or [M, 1, 2] for M listeners
    over n items)."""
    log_pi = torch.log_softmax(scores, -1)
    relative = log_pi - log_pi.max(-1, keepdim=True).values
    q = torch.sigmoid(tick[..., :1] + tick[..., 1:] * relative)
    return log_pi.exp(), q.clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)


def label_set_log_likelihood(pi: torch.Tensor, q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log P(the label set ``y``) [...] for one primary class drawn from ``pi`` and every other
    class ticked independently with ``q`` (all [..., C]; ``y`` bool): the formula of
    :meth:`~perserbench.data.synthetic.perception.ListenerModel.every_listener_log_likelihood`,
    in torch so that the evidence head can be trained through it."""
    secondary = torch.where(y, q.log(), torch.log1p(-q)).sum(-1)
    return secondary + torch.log((torch.where(y, pi, torch.zeros_like(pi)) / q).sum(-1).clamp(min=1e-300))


def class_marginals(pi: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """P(a class is in the label set): it is the primary class, or else a tick, ``π + (1 − π) q``."""
    return pi + (1.0 - pi) * q


@dataclass(frozen=True)
class Population:
    """Hypothetical listeners [M]: their numbers [M, C + 2] (centred log-prior, then α, β) and,
    optionally, the confusion each applies to the evidence [M, C, C] (``benchmarks/annotator_model.py
    --confusion``; none in ``calibrate``)."""

    numbers: torch.Tensor
    confusion: torch.Tensor | None = None

    def scores(self, evidence: torch.Tensor) -> torch.Tensor:
        """Primary scores [M, n, C] of items with ``evidence`` [n, C]."""
        c = evidence.shape[1]
        heard = evidence if self.confusion is None else torch.einsum("nc,mcd->mnd", evidence, self.confusion)
        return heard + self.numbers[:, None, :c]

    def subset(self, members: torch.Tensor) -> Population:
        """The members selected by ``members`` (a mask or indices), with their confusions."""
        return Population(self.numbers[members], None if self.confusion is None else self.confusion[members])

    def marginals(self, evidence: torch.Tensor,
                  labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every member's class marginals [M, n, C] on items of ``evidence`` [n, C], and with
        ``labels`` [n, C] the log-likelihood of those label sets summed over the items [M]."""
        c = evidence.shape[1]
        pi, q = annotation_probabilities(self.scores(evidence), self.numbers[:, None, c:])
        log_likelihood = None if labels is None else label_set_log_likelihood(pi, q, labels.bool()).sum(1)
        return class_marginals(pi, q), log_likelihood


@dataclass
class AnnotatorModel:
    """A fitted model: the evidence head, each meta-train listener's numbers [J, C + 2]
    (centred log-prior, then α, β) and, with ``confusion``, their confusion matrices [J, C, C]."""

    head: EmotionHead
    listeners: torch.Tensor
    confusion: torch.Tensor | None = None

    def population(self, members: int, rng: np.random.Generator) -> Population:
        """``members`` listeners: numbers from the Gaussian with the meta-train listeners' mean
        and per-number spread (log-priors re-centred); with confusion matrices, each member takes
        a meta-train listener's at random (schools of confusion are not Gaussian)."""
        mean, std = self.listeners.mean(0), self.listeners.std(0)
        drawn = mean + torch.from_numpy(rng.normal(size=(members, len(mean)))) * std
        c = drawn.shape[1] - 2
        drawn[:, :c] -= drawn[:, :c].mean(1, keepdim=True)
        if self.confusion is None:
            return Population(drawn)
        return Population(drawn, self.confusion[torch.from_numpy(rng.integers(len(self.confusion), size=members))])


def fit_annotator_model(train: MetaTrainSet, seed: int, epochs: int = EPOCHS,
                        confusion: bool = False) -> AnnotatorModel:
    """The evidence head and every meta-train listener's numbers (and with ``confusion`` a C × C
    matrix each, ``I + W_j`` applied to the evidence: a crowd layer), by the label-set
    likelihood of their annotations (Adam; deterministic for a seed). Minibatches read their
    utterances' features from ``train.features``, so a memory-mapped corpus is never loaded whole."""
    torch.manual_seed(seed)
    _, n_layers, dim = train.features.shape
    c, listeners = train.n_classes, len(train.listeners)
    head = EmotionHead(n_layers, dim, c)
    head.set_standardizer(train.features)
    log_prior = torch.zeros(listeners, c, requires_grad=True)
    tick = torch.tensor([TICK_INIT] * listeners, requires_grad=True)
    mixing = torch.zeros(listeners, c, c, requires_grad=confusion)
    groups = [{"params": head.parameters(), "weight_decay": 1e-4}, {"params": [log_prior, tick], "lr": 3e-2}]
    optimizer = torch.optim.Adam(groups + ([{"params": [mixing], "lr": 1e-2}] if confusion else []), lr=1e-3)
    y = train.y.bool()
    order = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=order).split(BATCH):
            j = train.listener[batch]
            evidence = head(train.features[train.utterance[batch]])
            if confusion:
                evidence = evidence + torch.einsum("nc,ncd->nd", evidence, mixing[j])
            pi, q = annotation_probabilities(evidence + log_prior[j], tick[j])
            loss = -label_set_log_likelihood(pi, q, y[batch]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    labelled = torch.bincount(train.listener, minlength=listeners) > 0  # a listener without labels is no evidence
    centred = log_prior - log_prior.mean(1, keepdim=True)
    numbers = torch.cat([centred, tick], 1).detach().double()[labelled]
    matrices = (torch.eye(c, dtype=torch.float64) + mixing.detach().double())[labelled] if confusion else None
    return AnnotatorModel(head, numbers, matrices)


def reference_thresholds(predictive: torch.Tensor) -> np.ndarray:
    """Per-class thresholds [..., C]: the median over reference episodes (consecutive
    ``REFERENCE_QUERY``-item slices of ``predictive`` [..., R, C], one listener's posterior
    predictive per leading index) of each one's expected-F1-optimal thresholds. Why a median over
    episodes: a metric scored per 20-item episode is optimised per episode, and one pooled set of
    400 items would decide as if every class were frequent."""
    p = predictive.float().numpy()
    r, c = p.shape[-2:]
    episodes = p.reshape(*p.shape[:-2], r // REFERENCE_QUERY, REFERENCE_QUERY, c) if r % REFERENCE_QUERY == 0 \
        else p[..., None, :, :]
    return np.median(optimal_thresholds(episodes), axis=-2)


def reference_utterances(train: MetaTrainSet, rng: np.random.Generator) -> np.ndarray:
    """``REFERENCE_EPISODES × REFERENCE_QUERY`` distinct meta-train utterances (rows of
    ``train.features``), fewer whole episodes on a small corpus, all of them on a tiny one."""
    utterances = np.unique(train.utterance.numpy())
    whole = len(utterances) // REFERENCE_QUERY * REFERENCE_QUERY
    n = min(REFERENCE_EPISODES * REFERENCE_QUERY, whole) if whole else len(utterances)
    return rng.choice(utterances, n, replace=False)


@dataclass
class AnnotatorPosterior:
    """One listener under the annotator model: the population's posterior weights [M] given
    their support, and the decision thresholds [C] of its posterior predictive on the reference
    utterances."""

    head: EmotionHead
    population: Population
    weights: torch.Tensor
    thresholds: np.ndarray

    def marginals(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior-predictive class marginals [Q, C] (float64) of items with features ``x``."""
        with torch.no_grad():
            members, _ = self.population.marginals(self.head(x).double())
        return torch.einsum("m,mqc->qc", self.weights, members)


@dataclass
class FittedAnnotators:
    """What :func:`fit_annotators` leaves for adaptation: the model's evidence head, the population
    and every member's marginals on the reference utterances [M, R, C]."""

    head: EmotionHead
    population: Population
    reference_marginals: torch.Tensor

    def posteriors(self, supports: list[tuple[torch.Tensor, torch.Tensor]]) -> list[AnnotatorPosterior]:
        """One listener per support, given as features ``x`` [K, ...] and label sets ``y`` [K, C].
        Every listener's posterior is computed on its own; only the thresholds' expected-F1
        search runs over all of them at once (:func:`reference_thresholds`, per episode)."""
        weights = []
        with torch.no_grad():
            for x, y in supports:
                _, log_likelihood = self.population.marginals(self.head(x).double(), y)
                assert log_likelihood is not None
                weights.append(torch.softmax(log_likelihood, 0))
        predictive = torch.stack([torch.einsum("m,mrc->rc", w, self.reference_marginals) for w in weights])
        thresholds = reference_thresholds(predictive)
        return [self._posterior(w, t) for w, t in zip(weights, thresholds, strict=True)]

    def _posterior(self, weights: torch.Tensor, thresholds: np.ndarray) -> AnnotatorPosterior:
        # Members the support has all but ruled out carry no weight a float32 prediction can
        # show; dropping them makes predicting cost what the posterior's effective size does.
        kept = weights > weights.max() * NEGLIGIBLE_WEIGHT
        return AnnotatorPosterior(self.head, self.population.subset(kept), weights[kept] / weights[kept].sum(),
                                  thresholds)


def fit_annotators(train: MetaTrainSet, seed: int, members: int = MEMBERS, epochs: int = EPOCHS,
                   confusion: bool = False) -> FittedAnnotators:
    """:func:`fit_annotator_model` on the meta-train set (``epochs``, ``confusion`` as there),
    ``members`` population listeners and the reference utterances' marginals, all from ``seed``."""
    model = fit_annotator_model(train, seed, epochs, confusion)
    rng = np.random.default_rng(seed)
    population = model.population(members, rng)
    reference = torch.from_numpy(reference_utterances(train, rng))
    with torch.no_grad():
        evidence = model.head(train.features[reference]).double()
    return FittedAnnotators(model.head, population, population.marginals(evidence)[0])
