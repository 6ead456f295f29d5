"""A board task pooled with its replicate draws: one table over the listeners of every draw.

Why: a board task is one draw of a synthetic corpus, 16 listeners. A cell's gain over
consensus, or its share of the oracle's headroom, moves from draw to draw by more than many
methods' effects (docs/generators.md, "How typical is the board's draw?"), so a single draw
can neither resolve a small gain nor say how typical its own numbers are. A *replicate*
(:attr:`perserbench.tasks.TaskSpec.replicate_of`) is the task's protocol on another corpus
seed; its listeners are other people drawn from the same generator, so the draws' listeners
together are one larger independent sample.

How: in each (scenario, K) cell, a method (or reference) is pooled only where every draw has
it, in one configuration. Its episode records from every draw, each listener named
``<task>/<listener>`` (draws reuse listener ids), go through the metric module's own
:func:`~perserbench.metrics.listener_aggregates` and :func:`~perserbench.metrics.summarize`
(mean over listeners, hierarchical-bootstrap CI): the pooled cell is what one result file
over all those listeners would hold. The board then computes the same statistics on it as on
any task (paired tests against consensus over the pooled listeners, Holm over the cell's
methods, headroom, do-no-harm). Other-listener controls are not pooled: a replicate has none.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from perserbench.leaderboard.board import CellKey, TaskBoard, cells_from
from perserbench.metrics import listener_aggregates, summarize
from perserbench.results import EpisodeRecord, RunResult
from perserbench.roles import Role, role_of

POOLED_ROLES: tuple[Role, ...] = ("ranked", "reference")


@dataclass(frozen=True)
class CellSource:
    """One draw's records of one method and cell, and the file they come from."""

    episodes: list[EpisodeRecord]
    file: str
    version: str  # perserbench version that wrote the file
    config_hash: str


def draw_listener(task: str, listener: str) -> str:
    """A listener's name on a pooled board: draws reuse listener ids, so the task names it."""
    return f"{task}/{listener}"


def pool_draws(tasks: dict[str, TaskBoard], loaded: list[tuple[str, RunResult]]) -> dict[str, TaskBoard]:
    """Each board task that has replicates on the board, pooled with them (board task first,
    then its replicates by name); tasks without replicates are left out."""
    draws: dict[str, list[str]] = defaultdict(list)
    for name, task in tasks.items():
        if task.replicate_of and task.replicate_of in tasks:
            draws[task.replicate_of].append(name)
    if not draws:
        return {}
    pooled_tasks = set(draws) | {name for names in draws.values() for name in names}
    sources: dict[tuple[str, Role, str, CellKey], CellSource] = {}  # (task, role, method, cell)
    for path, result in loaded:
        role = role_of(result, path)
        if role not in POOLED_ROLES or result.task_name not in pooled_tasks:
            continue
        by_cell: dict[CellKey, list[EpisodeRecord]] = defaultdict(list)
        for rec in result.episodes:
            by_cell[(rec.scenario, rec.shots)].append(rec)
        for key, records in by_cell.items():
            sources[(result.task_name, role, result.method_name, key)] = CellSource(
                records, path.rsplit("/", 1)[-1], result.perserbench_version, str(result.method.get("config_hash", "")))
    return {parent: _pooled([tasks[name] for name in [parent, *sorted(replicates)]], sources)
            for parent, replicates in sorted(draws.items())}


def _pooled(draws: list[TaskBoard], sources: dict[tuple[str, Role, str, CellKey], CellSource]) -> TaskBoard:
    parent, names = draws[0], [d.name for d in draws]
    board = TaskBoard(parent.name, parent.version, " + ".join(d.hash for d in draws), draws=tuple(names))
    for role in POOLED_ROLES:
        for key in parent.cell_keys:
            for method in sorted(parent.part(role).get(key, {})):
                found = [sources[(name, role, method, key)] for name in names if (name, role, method, key) in sources]
                if len(found) < len(names) or len({f.config_hash for f in found}) != 1:
                    continue  # missing on a draw, or configurations that differ: nothing to pool
                episodes = [dataclasses.replace(rec, listener=draw_listener(name, rec.listener))
                            for name, source in zip(names, found) for rec in source.episodes]
                versions = ", ".join(sorted({f.version for f in found}))
                (cell,) = cells_from(method, [key[0]], [key[1]], summarize(episodes), listener_aggregates(episodes),
                                     "", versions, found[0].config_hash, tuple(f.file for f in found))
                board.part(role).setdefault(key, {})[method] = cell
    return board

