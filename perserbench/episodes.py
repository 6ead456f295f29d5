"""The one episode sampler, the data handed to methods, and the leakage guards (DESIGN §2).

Every method sees exactly the same episodes: an episode is a pure function of the task spec's
seed and (listener, scenario, episode index). Supports are *nested* across shot counts and the
query set is shared by all K of an episode, so score-vs-shots curves are paired too.

Methods never receive the corpus. They get a :class:`MetaTrainSet` (meta-train listeners'
labels on training-pool utterances only), a :class:`LabelledItems` support set, and
:class:`Items` query sets that carry no labels at all, so adaptation cannot read query labels.
Each object is checked against the invariants when it is built; a violation raises
:class:`LeakageError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from perserbench.errors import LeakageError, PerserbenchError
from perserbench.featurerows import FeatureRows, gather
from perserbench.tasks import SCENARIOS, ListenerFold, ResolvedTask


@dataclass(frozen=True)
class Episode:
    """K support + Q query annotation rows (indices into ``corpus.annotations``) of one listener."""

    fold: int
    listener: str
    scenario: str
    shots: int
    index: int
    support: np.ndarray
    query: np.ndarray

    @property
    def key(self) -> tuple[int, str, str, int, int]:
        return (self.fold, self.listener, self.scenario, self.shots, self.index)


@dataclass(frozen=True)
class Items:
    """Unlabelled items to predict: their features ``x`` [n, L, D] and nothing else.

    Sealed evaluation (DESIGN §2): no listener name, no utterance id, no ground truth. A method
    cannot key a memory on an identity the protocol hides, and cannot look a label up."""

    x: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class LabelledItems(Items):
    """Items of one listener with that listener's multi-hot labels ``y`` [n, C]."""

    y: torch.Tensor

    def unlabelled(self) -> Items:
        return Items(self.x)


def meta_train_rows(task: ResolvedTask, fold: ListenerFold) -> np.ndarray:
    """The annotation rows a fold's :class:`MetaTrainSet` holds: its meta-train listeners'
    labels of training-pool utterances (its features are ``np.unique`` of their utterances)."""
    ann = task.corpus.annotations
    return np.flatnonzero(np.isin(ann.listener, np.array(fold.train, dtype=object)) & task.train_pool[ann.utterance])


class MetaTrainSet:
    """What a method may learn from in one fold: meta-train listeners' annotations on
    training-pool utterances, and the fold's consensus labels computed from those only.

    It holds tensors and meta-train listener names only, never the corpus, utterance ids or a
    synthetic corpus's ground truth, and it pickles small: it is what the runner ships to the
    sealed process a method runs in (:mod:`perserbench.sealed`).

    ``features`` are the training-pool utterances that meta-train listeners labelled, read as
    float32 batches (:class:`~perserbench.featurerows.FeatureRows`: ``features[idx]``,
    ``features.map(fn)``, ``features.mean_std()``); annotation ``a`` is
    ``(utterance[a] → row of features, listener[a], y[a])``. ``x`` is all of them as one float32
    tensor ``[U, L, D]``: convenient on small corpora, but U × L × D × 4 bytes (12 GB at
    MSP-Podcast scale), so the built-in methods read ``features`` in batches instead.
    """

    def __init__(self, task: ResolvedTask, fold: ListenerFold) -> None:
        ann = task.corpus.annotations
        rows = meta_train_rows(task, fold)
        check_meta_train(task, fold, rows)
        utts, local = np.unique(ann.utterance[rows], return_inverse=True)
        self.task_name = task.spec.name
        self.labels: tuple[str, ...] = task.corpus.vocabulary
        self.listeners: tuple[str, ...] = tuple(sorted(set(ann.listener[rows].tolist())))
        self.features = FeatureRows(task.features, utts)
        self.utterance = torch.from_numpy(local.astype(np.int64))
        listener_pos = {name: i for i, name in enumerate(self.listeners)}
        self.listener = torch.tensor([listener_pos[n] for n in ann.listener[rows]], dtype=torch.long)
        self.y = torch.from_numpy(ann.labels[rows].astype(np.float32))
        self.consensus_threshold = task.spec.consensus.threshold

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @cached_property
    def x(self) -> torch.Tensor:
        """Every training utterance's features, float32 ``[U, L, D]`` (materialised on first use)."""
        return self.features.materialize()

    def sealed_copy(self, folder: Path) -> MetaTrainSet:
        """This set with file-backed features rewritten into ``folder`` as this fold's rows
        alone (:meth:`FeatureRows.sealed_copy`), so that what the runner ships to a sealed worker
        reaches nothing of the held-out pool; the set itself when its features are in memory."""
        if not self.features.file_backed:
            return self
        copy = object.__new__(MetaTrainSet)
        copy.__dict__.update(self.__getstate__())
        copy.features = self.features.sealed_copy(folder / "features.npy")
        return copy

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("x", None)  # a materialised copy is rebuilt on demand, never shipped
        return state

    @cached_property
    def consensus(self) -> torch.Tensor:
        """Consensus label per training utterance [U, C]: classes chosen by at least
        ``threshold`` of the meta-train listeners who labelled it; an utterance where no class
        reaches it takes its most-chosen class(es), so every utterance keeps a label."""
        counts = torch.zeros(len(self.features), self.n_classes).index_add_(0, self.utterance, self.y)
        raters = torch.bincount(self.utterance, minlength=len(self.features)).clamp(min=1).unsqueeze(1)
        share = counts / raters
        labels = share >= self.consensus_threshold - 1e-9
        top = share == share.max(dim=1, keepdim=True).values
        return torch.where(labels.any(dim=1, keepdim=True), labels, top).float()

    def listener_items(self, listener: str) -> LabelledItems:
        """All training annotations of one meta-train listener (for episodic meta-learning)."""
        rows = torch.nonzero(self.listener == self.listeners.index(listener)).squeeze(1)
        return LabelledItems(self.features[self.utterance[rows]], self.y[rows])


def _stable_int(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def sample_episodes(task: ResolvedTask, fold: ListenerFold, scenario: str, shots: int) -> list[Episode]:
    """The fixed episodes of every test listener of ``fold`` for (scenario, shots)."""
    spec = task.spec.episodes
    if scenario not in spec.scenarios:
        raise PerserbenchError(
            f"scenario {scenario!r} is not part of task {task.spec.name!r} (scenarios: {', '.join(spec.scenarios)})"
        )
    if shots not in spec.shots:
        raise PerserbenchError(
            f"K={shots} is not a shot count of task {task.spec.name!r} (shots: "
            f"{', '.join(map(str, spec.shots))}); fixed shot counts keep results comparable"
        )
    out = []
    for listener in fold.test[scenario]:
        rows = task.listener_rows(listener, scenario)
        if len(rows) < shots + spec.min_query:
            raise PerserbenchError(
                f"listener {listener!r} has {len(rows)} labels in scenario {scenario!r}, fewer than "
                f"K={shots} + min_query={spec.min_query}"
            )
        n_query = _query_size(task, rows)
        for e in range(spec.episodes):
            perm = _permutation(task, listener, scenario, e, rows)
            episode = Episode(fold.index, listener, scenario, shots, e,
                              support=np.sort(perm[n_query:n_query + shots]), query=np.sort(perm[:n_query]))
            check_episode(task, fold, episode)
            out.append(episode)
    return out


def _query_size(task: ResolvedTask, rows: np.ndarray) -> int:
    return min(task.spec.episodes.query, len(rows) - task.spec.max_shots)


def _permutation(task: ResolvedTask, listener: str, scenario: str, index: int, rows: np.ndarray) -> np.ndarray:
    """The listener's rows in the fixed order episode ``index`` draws them: query first, then
    the (nested) supports."""
    rng = np.random.default_rng([task.spec.episodes.seed, _stable_int(listener), SCENARIOS.index(scenario), index])
    return rows[rng.permutation(len(rows))]


def control_partners(fold: ListenerFold, scenario: str, listener: str) -> list[str]:
    """The other-listener control's deterministic pairing order: the fold's other test listeners
    of the scenario, cyclically by name starting after ``listener``. The partner is the first of
    them with enough labels (:func:`control_episode`). Partners are test listeners of the fold,
    so their labels never entered this fold's meta-training."""
    listeners = sorted(fold.test[scenario])
    if len(listeners) < 2:
        raise PerserbenchError(
            f"the other-listener control needs at least 2 test listeners per fold; fold {fold.index} has "
            f"{len(listeners)} in scenario {scenario!r} (use fewer listener folds)"
        )
    start = listeners.index(listener)
    return [listeners[(start + step) % len(listeners)] for step in range(1, len(listeners))]


def control_episode(task: ResolvedTask, fold: ListenerFold, episode: Episode) -> Episode:
    """The other-listener control of ``episode``: the same query (the target listener's),
    with a support of K items labelled by a partner, drawn in the partner's own episode order
    from the partner's rows outside the partner's query *and* outside the target's query audio,
    so the support never labels an item the target is scored on.

    The partner is the first of :func:`control_partners` with at least max(K) such rows, so one
    partner serves every K of the episode and the control's supports stay nested across K like
    the own supports (a listener with few labels in a scenario is skipped, not an error)."""
    ann = task.corpus.annotations
    need = max(task.spec.episodes.shots)
    for partner in control_partners(fold, episode.scenario, episode.listener):
        rows = task.listener_rows(partner, episode.scenario)
        perm = _permutation(task, partner, episode.scenario, episode.index, rows)[_query_size(task, rows):]
        allowed = perm[~np.isin(ann.utterance[perm], ann.utterance[episode.query])]
        if len(allowed) >= need:
            break
    else:
        raise PerserbenchError(
            f"other-listener control: no other test listener of fold {fold.index} has {need} labels outside both "
            f"queries of listener {episode.listener!r}'s episode {episode.index} in scenario {episode.scenario!r}; "
            f"use fewer listener folds or smaller shots"
        )
    control = dataclasses.replace(episode, support=np.sort(allowed[:episode.shots]))
    if np.intersect1d(ann.utterance[control.support], ann.utterance[control.query]).size:
        raise LeakageError(f"control of episode {episode.key}: support and query share audio")
    if (ann.listener[control.support] == episode.listener).any():
        raise LeakageError(f"control of episode {episode.key}: the support holds the target listener's own labels")
    return control


def all_episodes(task: ResolvedTask) -> Iterator[Episode]:
    for fold in task.folds:
        for scenario in task.spec.episodes.scenarios:
            for shots in task.spec.episodes.shots:
                yield from sample_episodes(task, fold, scenario, shots)


def check_meta_train(task: ResolvedTask, fold: ListenerFold, rows: np.ndarray) -> None:
    """No test listener's label and no held-out utterance may enter meta-training."""
    ann = task.corpus.annotations
    tested = set().union(*map(set, fold.test.values()))
    overlap = tested & set(fold.train)
    if overlap:
        raise LeakageError(f"fold {fold.index}: test listener(s) {sorted(overlap)[:3]} are also meta-train listeners")
    leaked = tested & set(ann.listener[rows].tolist())
    if leaked:
        raise LeakageError(f"fold {fold.index}: labels of test listener(s) {sorted(leaked)[:3]} are in the meta-train set")
    if not task.train_pool[ann.utterance[rows]].all():
        raise LeakageError(f"fold {fold.index}: held-out utterances are in the meta-train set")


def check_episode(task: ResolvedTask, fold: ListenerFold, episode: Episode) -> None:
    """Support ∩ query = ∅ (rows and utterances); both belong to the listener and to the
    scenario's pool; the listener is a test listener of the fold, never a meta-train one."""
    ann = task.corpus.annotations
    where = f"episode {episode.key}"
    if np.intersect1d(episode.support, episode.query).size or np.intersect1d(
        ann.utterance[episode.support], ann.utterance[episode.query]
    ).size:
        raise LeakageError(f"{where}: support and query share items")
    if episode.listener in fold.train:
        raise LeakageError(f"{where}: listener {episode.listener!r} is a meta-train listener of fold {fold.index}")
    rows = np.concatenate([episode.support, episode.query])
    if (ann.listener[rows] != episode.listener).any():
        raise LeakageError(f"{where}: items labelled by another listener")
    in_train = task.train_pool[ann.utterance[rows]]
    if episode.scenario == "unseen" and in_train.any():
        raise LeakageError(f"{where}: unseen-scenario items come from the training pool")
    if episode.scenario == "seen" and not in_train.all():
        raise LeakageError(f"{where}: seen-scenario items come from the held-out pool")


def episode_items(task: ResolvedTask, episode: Episode) -> tuple[LabelledItems, Items, np.ndarray]:
    """(support with labels, query without labels, query truth) for one episode."""
    ann = task.corpus.annotations

    def features(rows: np.ndarray) -> torch.Tensor:
        return gather(task.features, ann.utterance[rows])

    support = LabelledItems(features(episode.support), torch.from_numpy(ann.labels[episode.support].astype(np.float32)))
    return support, Items(features(episode.query)), ann.labels[episode.query]


def split_hash(task: ResolvedTask) -> str:
    """Content hash of a resolved task's splits: the spec, the annotations, the pools, the
    folds and every episode's support/query rows. Results carry it and are only ever compared
    on equal hashes. It lives here, not on the task, because it covers the episodes, which
    this module draws; computed once per task object."""
    cached = task.__dict__.get("_split_hash")
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    digest.update(json.dumps(task.spec.as_dict(), sort_keys=True, default=list).encode())
    ann = task.corpus.annotations
    digest.update("\n".join(task.corpus.utterance_ids.tolist()).encode())
    digest.update("\n".join(ann.listener.tolist()).encode())
    digest.update(np.ascontiguousarray(ann.utterance, dtype=np.int64).tobytes())
    digest.update(np.packbits(ann.labels).tobytes())
    digest.update(task.train_pool.tobytes())
    for fold in task.folds:
        digest.update(json.dumps(dataclasses.asdict(fold), sort_keys=True).encode())
    for ep in all_episodes(task):
        digest.update(f"{ep.key}".encode())
        digest.update(np.ascontiguousarray(ep.support, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(ep.query, dtype=np.int64).tobytes())
    task.__dict__["_split_hash"] = value = digest.hexdigest()[:16]
    return value
