"""Loading a comparison: result files → per-method, seed-averaged episode scores, refused
unless they are comparable (same splits, same listeners and episodes in every cell).

With the listener-pooled metric a listener has one score per cell, not one per episode: its
class counts summed over its episodes and seeds. It is stored as that listener's single
"episode" (index :data:`POOLED_EPISODE`), after the episodes were checked to match, so every
statistic downstream (bootstrap, paired tests, Friedman) runs unchanged over listeners."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perserbench.errors import PerserbenchError
from perserbench.results import (
    METRICS,
    POOLED_METRIC,
    PRIMARY_METRIC,
    EpisodeRecord,
    RunResult,
    find_result_files,
    load_result,
)
from perserbench.roles import Role, role_of

CellKey = tuple[str, str, int]  # (task, scenario, K)
EpisodeKey = tuple[int, str, int]  # (fold, listener, episode)
CONTROL_SUFFIX = " (other-listener)"  # label of a method's other-listener control
POOLED_EPISODE = -1  # the episode index of a listener's one pooled score


@dataclass
class MethodScores:
    """One method's seed-averaged episode scores per cell, and its role (ranked, reference
    or other-listener control, :mod:`perserbench.roles`)."""

    label: str
    name: str
    config_hash: str
    role: Role = "ranked"
    files: list[str] = field(default_factory=list)
    seeds: set[int] = field(default_factory=set)
    cells: dict[CellKey, dict[EpisodeKey, float]] = field(default_factory=dict)


@dataclass
class ComparisonData:
    metric: str
    files: list[str]
    tasks: dict[str, str]  # name -> hash
    methods: dict[str, MethodScores]  # label -> scores

    def cell_keys(self) -> list[CellKey]:
        from perserbench.tasks import SCENARIOS

        keys = {k for m in self.methods.values() for k in m.cells}
        return sorted(keys, key=lambda k: (k[0], SCENARIOS.index(k[1]) if k[1] in SCENARIOS else 99, k[1], k[2]))

    def methods_in(self, key: CellKey, role: Role | None = None) -> list[str]:
        """Labels of the methods with results in ``key`` (of one role, if given), sorted."""
        return sorted(label for label, m in self.methods.items()
                      if key in m.cells and (role is None or m.role == role))


def load_comparison(paths: Sequence[Path], metric: str = PRIMARY_METRIC) -> ComparisonData:
    """Load result files (directories are searched recursively) and check they are comparable."""
    if metric not in METRICS:
        raise PerserbenchError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    files = sorted({p.resolve() for p in find_result_files([Path(p) for p in paths])})
    results = [(str(f), load_result(f)) for f in files]
    return combine(results, metric)


def combine(results: Sequence[tuple[str, RunResult]], metric: str = PRIMARY_METRIC) -> ComparisonData:
    """Merge (source, result) pairs into per-method, seed-averaged scores; refuse mismatches."""
    if metric not in METRICS:
        raise PerserbenchError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    tasks: dict[str, tuple[str, str]] = {}  # name -> (hash, first file)
    configs: dict[tuple[str, str], set[str]] = defaultdict(set)  # (task, method) -> config hashes
    for src, r in results:
        seen = tasks.setdefault(r.task_name, (str(r.task["hash"]), src))
        if seen[0] != r.task["hash"]:
            raise PerserbenchError(
                f"task.hash differs for task {r.task_name!r}: {seen[1]} has {seen[0]}, {src} has {r.task['hash']}; "
                "results are only compared on identical splits — re-run on the same task version"
            )
        configs[(r.task_name, r.method_name)].add(str(r.method.get("config_hash", "")))
    ambiguous = {name for (_, name), hashes in configs.items() if len(hashes) > 1}

    methods: dict[str, MethodScores] = {}
    raw: dict[tuple[str, CellKey, EpisodeKey], dict[int, EpisodeRecord]] = defaultdict(dict)
    where: dict[tuple[str, CellKey, EpisodeKey, int], str] = {}
    for src, r in results:
        chash, role = str(r.method.get("config_hash", "")), role_of(r, src)
        label = f"{r.method_name}@{chash[:6]}" if r.method_name in ambiguous else r.method_name
        label += CONTROL_SUFFIX if role == "control" else ""
        m = methods.setdefault(label, MethodScores(label, r.method_name, chash, role))
        if m.role != role:
            raise PerserbenchError(f"{src}: {label} is a {role} result here and a {m.role} result in {m.files[0]}; "
                                   "a method is either a reference or not")
        m.files.append(src)
        for rec in r.episodes:
            cell, ep = (r.task_name, rec.scenario, rec.shots), (rec.fold, rec.listener, rec.episode)
            slot = raw[(label, cell, ep)]
            if rec.seed in slot:
                raise PerserbenchError(
                    f"episodes: {label} seed {rec.seed} {cell[1]} K={cell[2]} listener {rec.listener} episode "
                    f"{rec.episode} appears twice ({where[(label, cell, ep, rec.seed)]} and {src}); pass each run once"
                )
            slot[rec.seed] = rec
            where[(label, cell, ep, rec.seed)] = src
            m.seeds.add(rec.seed)
    seed_sets: dict[tuple[str, CellKey], set[frozenset[int]]] = defaultdict(set)
    for (label, cell, ep), by_seed in raw.items():
        value = 0.0 if metric == POOLED_METRIC else float(np.mean([getattr(r, metric) for r in by_seed.values()]))
        methods[label].cells.setdefault(cell, {})[ep] = value
        seed_sets[(label, cell)].add(frozenset(by_seed))
    for (label, cell), sets in seed_sets.items():
        if len(sets) > 1:
            a, b = sorted(sorted(s) for s in sets)[:2]
            raise PerserbenchError(f"seeds: {label} on {cell[0]} {cell[1]} K={cell[2]} has seeds {a} for some "
                                   f"episodes and {b} for others; give every episode the same seeds")
    data = ComparisonData(metric, [s for s, _ in results], {t: h for t, (h, _) in sorted(tasks.items())},
                          dict(sorted(methods.items())))
    _check_cells(data)
    if metric == POOLED_METRIC:
        _pool(data, raw)
    return data


def _pool(data: ComparisonData, raw: dict[tuple[str, CellKey, EpisodeKey], dict[int, EpisodeRecord]]) -> None:
    """Replace each listener's episodes by its one pooled score (counts over episodes and seeds)."""
    from perserbench.metrics import pooled_f1

    records: dict[tuple[str, CellKey, tuple[int, str]], list[EpisodeRecord]] = defaultdict(list)
    for (label, cell, (fold, listener, _)), by_seed in raw.items():
        records[(label, cell, (fold, listener))].extend(by_seed.values())
    for m in data.methods.values():
        m.cells = {cell: {} for cell in m.cells}
    for (label, cell, (fold, listener)), recs in records.items():
        data.methods[label].cells[cell][(fold, listener, POOLED_EPISODE)] = pooled_f1(recs)


def _check_cells(data: ComparisonData) -> None:
    """Every method of a cell must have the same listeners and the same episodes."""
    for key in data.cell_keys():
        labels = data.methods_in(key)
        first = labels[0]
        base = data.methods[first].cells[key]
        base_listeners = {(f, x) for f, x, _ in base}
        for other in labels[1:]:
            eps = data.methods[other].cells[key]
            listeners = {(f, x) for f, x, _ in eps}
            where = f"{key[0]} {key[1]} K={key[2]}"
            if listeners != base_listeners:
                diff = min(listeners ^ base_listeners)
                owner = other if diff in listeners else first
                raise PerserbenchError(
                    f"listeners differ in {where}: fold {diff[0]} listener {diff[1]} is in {owner} only "
                    f"({first} vs {other}); compare results of the same task and listener folds"
                )
            if set(eps) != set(base):
                diff = min(set(eps) ^ set(base))
                owner = other if diff in eps else first
                raise PerserbenchError(
                    f"episodes differ in {where}: listener {diff[1]} episode {diff[2]} is in {owner} only "
                    f"({first} vs {other}); every method must be run on the same episodes"
                )
