"""``bayes-oracle``: the K-shot ceiling — what K labels can reveal about a listener at all.

A reference, not a competitor (:class:`~perserbench.method.ReferenceMethod`). The ``oracle``
knows the listener; this one knows everything *except* the listener: the synthetic corpus's
generator, the utterances' true evidence and the population listeners are drawn from (its
styles or schools held fixed, :meth:`~perserbench.data.synthetic.perception.ListenerModel.draw_population`).
From the episode's K support labels it infers the listener exactly as Bayes' rule says:

    P(listener = m | support) ∝ Π_{support items i} P(y_i | u_i, m),   m = 1..M drawn from the population,

(the likelihood of a whole label set,
:meth:`~perserbench.data.synthetic.perception.ListenerModel.every_listener_log_likelihood`),
predicts each query item's class marginals under that posterior and decides them like the
oracle (:func:`perserbench.expected_f1.optimal_thresholds`).

Why: the oracle's headroom mixes two gaps, one no K-shot method can close (the listener is
unknown) and one a better model could (the features carry the evidence only noisily). This
reference splits them per K: ``oracle − bayes-oracle`` is what K items cannot reveal even to
a learner who knows the generator; ``bayes-oracle − consensus`` is the most a K-shot method can
gain. A method's gain is best read against it, and a target such as "a third of the oracle's
headroom at K = 20" can be checked for feasibility.

Approximations, both measurable: the posterior is a Monte-Carlo one over ``population``
listeners (its effective sample size is reported by ``benchmarks/bayes_ceiling.py``), and the
thresholds treat query items as independent, while under an unknown listener they are
correlated through it (the oracle's decision is exact; this one is nearly so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perserbench.data.synthetic.perception import ListenerModel
from perserbench.episodes import Episode, MetaTrainSet
from perserbench.expected_f1 import optimal_thresholds
from perserbench.head import _doc
from perserbench.method import ReferenceContext, ReferenceMethod
from perserbench.methods.oracle import ground_truth
from perserbench.registry import register_method
from perserbench.tasks import ResolvedTask

MEMBERS_PER_CHUNK = 1000  # population listeners evaluated at once (bounds the [members, rows, C] temporaries)
# Largest (listener rows × population listeners) kept for reuse across a listener's episodes:
# 2^23 pairs hold 8M log-likelihoods and 50M class marginals, ~260 MB (a synthetic listener's
# ~440 seen rows × 10,000 listeners is 4.4M).
CACHED_ROW_MEMBERS = 2**23


@dataclass
class BayesOracleConfig:
    population: int = _doc(10000, "hypothetical listeners drawn from the generator's population (the Monte-Carlo "
                                 "posterior's support); benchmarks/bayes_ceiling.py reports the effective sample "
                                 "size per K", ge=1)


@dataclass(frozen=True)
class ListenerPool:
    """Every population listener's view of annotation rows of one test listener (all its rows in
    a scenario, or one episode's): the log-likelihood of the label set actually given [M, R] and
    the class marginals [M, R, C]."""

    rows: np.ndarray  # [R] sorted annotation rows
    log_likelihood: np.ndarray
    marginals: np.ndarray


@register_method("bayes-oracle")
class BayesOracle(ReferenceMethod):
    """Bayes' rule over the synthetic generator's listener population, from the K support labels
    (the K-shot ceiling; a reference)."""

    Config = BayesOracleConfig

    def meta_fit(self, train: MetaTrainSet) -> None:
        self.population_: ListenerModel | None = None
        self.pools_: dict[tuple[str, str], ListenerPool] = {}

    def population(self, truth: ListenerModel) -> ListenerModel:
        """The population sample, drawn once per fitted instance from the method seed."""
        if self.population_ is None:
            self.population_ = truth.draw_population(np.random.default_rng(self.seed), self.config.population)
        return self.population_

    def pool(self, task: ResolvedTask, episode: Episode) -> ListenerPool:
        """The population's view of the episode's rows: of all the listener's rows in the
        scenario (computed once, reused by every episode and K) when they are at most
        :data:`CACHED_ROW_MEMBERS` row × member pairs, else of the episode's own rows only (a
        heavy listener of a skewed workload labels tens of thousands of items)."""
        key = (episode.listener, episode.scenario)
        if key in self.pools_:
            return self.pools_[key]
        population = self.population(task.corpus.truth)
        rows = task.listener_rows(episode.listener, episode.scenario)
        if len(rows) * len(population.listeners) > CACHED_ROW_MEMBERS:
            return self._evaluate(task, population, np.union1d(episode.support, episode.query))
        self.pools_[key] = self._evaluate(task, population, rows)
        return self.pools_[key]

    @staticmethod
    def _evaluate(task: ResolvedTask, population: ListenerModel, rows: np.ndarray) -> ListenerPool:
        ann = task.corpus.annotations
        utterances, labels = ann.utterance[rows], ann.labels[rows]
        chunks = [population.every_listener_log_likelihood(utterances, labels, members)
                  for members in np.array_split(np.arange(len(population.listeners)),
                                                -(-len(population.listeners) // MEMBERS_PER_CHUNK))]
        return ListenerPool(rows, np.concatenate([ll for ll, _ in chunks]),
                            np.concatenate([m.astype(np.float32) for _, m in chunks]))

    def posterior(self, task: ResolvedTask, episode: Episode) -> np.ndarray:
        """P(population listener m | the episode's support labels), [M]."""
        pool = self.pool(task, episode)
        log_weight = pool.log_likelihood[:, np.searchsorted(pool.rows, episode.support)].sum(axis=1)
        weight = np.exp(log_weight - log_weight.max())
        return weight / weight.sum()

    def predictive(self, task: ResolvedTask, episode: Episode, weight: np.ndarray) -> np.ndarray:
        """The query's class marginals [Q, C] (float32, as scored) under population weights
        ``weight`` [M]: the posterior, or any other belief about the listener."""
        pool = self.pool(task, episode)
        query = np.searchsorted(pool.rows, episode.query)
        return np.einsum("m,mqc->qc", weight, pool.marginals[:, query]).astype(np.float32)

    def predict_reference(self, context: ReferenceContext) -> tuple[np.ndarray, np.ndarray | None]:
        task, episode = context.task, context.episode
        ground_truth(task, "bayes-oracle")
        proba = self.predictive(task, episode, self.posterior(task, episode))
        return proba, optimal_thresholds(proba)


def effective_sample_size(weight: np.ndarray) -> float:
    """Kish's effective sample size of normalized importance weights: 1 / Σ w²."""
    return float(1.0 / np.square(weight).sum())

