"""The board model: validated result files arranged per task and (scenario, K) cell, with the
statistics the pages show.

Each file's cells land in one of three parts of its task (:mod:`perserbench.roles`):
**ranked** methods (ranks, tests against ``consensus``, headroom captured, CD diagrams),
**references** (ceilings: shown, never ranked or tested) and **other-listener controls** (only
used for the personalization gain own − control of the same method; never ranked). Nothing
here renders; :mod:`.markdown` and :mod:`.html` draw the same model.

Every number is of :data:`~perserbench.results.PRIMARY_METRIC`; the secondary metric is shown
beside it. Each ranked method also gets a **do-no-harm verdict** against ``consensus``
(:func:`perserbench.stats.no_harm_test`, TOST with margin
:data:`~perserbench.stats.NO_HARM_MARGIN`) per cell and per task. Across tasks, the board runs
one Friedman test whose blocks are the tasks that are not uniform controls (one per generator
or corpus), each scored by its mean over cells: the cells of one task share listeners and
episodes, and a uniform control shares its generator's world while nothing can be ranked on it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perserbench.errors import PerserbenchError
from perserbench.leaderboard.paths import check_no_stray_files, result_files
from perserbench.leaderboard.plausibility import check_ceilings
from perserbench.leaderboard.validate import TaskResolver, validate_result
from perserbench.results import (
    PRIMARY_METRIC,
    SECONDARY_METRIC,
    ListenerRecord,
    RunResult,
    SummaryRecord,
)
from perserbench.roles import BASELINE, CEILINGS, Role, headroom, role_of
from perserbench.stats import EquivalenceTest, FriedmanResult, friedman, no_harm_test

ALPHA = 0.05
CellKey = tuple[str, int]  # (scenario, K)
Part = dict[CellKey, dict[str, "Cell"]]  # (scenario, K) -> method -> cell


@dataclass(frozen=True)
class Cell:
    """One method's numbers for one (scenario, K) of one task, from one result file."""

    method: str
    scenario: str
    shots: int
    mean: float
    ci_low: float
    ci_high: float
    secondary: float  # mean over listeners of SECONDARY_METRIC
    micro_f1: float
    top1: float
    n_listeners: int
    n_episodes: int
    per_listener: dict[str, float]
    file: str
    version: str
    config_hash: str
    pooled_from: tuple[str, ...] = ()  # a cell pooled over corpus draws: the draws' files (``file`` is empty)

    @property
    def files(self) -> tuple[str, ...]:
        return self.pooled_from or (self.file,)


@dataclass(frozen=True)
class Comparison:
    """Paired over common test listeners: ``delta`` = mean(A − B), Wilcoxon ``p_value``,
    Holm-adjusted ``p_adjusted`` within the cell. A is a method and B ``consensus`` (tests
    against the baseline), or A is a method and B its other-listener control (gain)."""

    delta: float
    p_value: float
    p_adjusted: float
    n_listeners: int

    @property
    def marker(self) -> str:
        if not self.p_adjusted <= ALPHA:
            return ""
        return "▲" if self.delta > 0 else "▼"


@dataclass
class TaskBoard:
    name: str
    version: str
    hash: str
    ranked: Part = field(default_factory=dict)
    references: Part = field(default_factory=dict)
    controls: Part = field(default_factory=dict)
    comparisons: dict[CellKey, dict[str, Comparison]] = field(default_factory=dict)  # vs consensus
    gains: dict[CellKey, dict[str, Comparison]] = field(default_factory=dict)  # own − other-listener control
    headroom: dict[CellKey, dict[str, dict[str, float | None]]] = field(default_factory=dict)  # method -> ceiling
    no_harm: dict[CellKey, dict[str, EquivalenceTest | None]] = field(default_factory=dict)  # vs consensus
    no_harm_task: dict[str, EquivalenceTest | None] = field(default_factory=dict)  # over all cells of the task
    uniform: bool = False  # a uniform control: every listener perceives alike
    replicate_of: str | None = None  # another corpus draw of this board task (pooled in Board.pooled)
    draws: tuple[str, ...] = ()  # a board pooled over corpus draws: the tasks pooled, the board task first

    @property
    def title(self) -> str:
        """The name a page shows: a pooled board is its task's name and the number of draws."""
        return f"{self.name} ({len(self.draws)} draws pooled)" if self.draws else self.name

    def part(self, role: Role) -> Part:
        return {"ranked": self.ranked, "reference": self.references, "control": self.controls}[role]

    @property
    def cell_keys(self) -> list[CellKey]:
        from perserbench.tasks import SCENARIOS

        keys = set(self.ranked) | set(self.references) | set(self.controls)
        return sorted(keys, key=lambda k: (SCENARIOS.index(k[0]), k[1]))

    @property
    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.cell_keys))

    @property
    def shots(self) -> list[int]:
        return sorted({k for _, k in self.cell_keys})

    def methods(self, role: Role = "ranked") -> list[str]:
        return sorted({m for cells in self.part(role).values() for m in cells})

    @property
    def ceilings(self) -> list[str]:
        """References that serve as ceilings for headroom, in display order."""
        present = self.methods("reference")
        return [c for c in CEILINGS if c in present]

    def files(self, method: str, role: Role = "ranked") -> list[str]:
        return sorted({f for c in self.part(role).values() if method in c for f in c[method].files})

    def versions(self, method: str, role: Role = "ranked") -> list[str]:
        return sorted({c[method].version for c in self.part(role).values() if method in c})

    def overall(self) -> list[tuple[int | None, str, float | None]]:
        """(rank, method, mean macro-F1 over the task's cells) for ranked methods: best mean
        first; a method missing any cell of the board is listed after, unranked (its mean
        would not be comparable)."""
        keys = [k for k in self.cell_keys if k in self.ranked]
        complete, partial = [], []
        for method in self.methods():
            values = [self.ranked[k][method].mean for k in keys if method in self.ranked[k]]
            if len(values) == len(keys):
                complete.append((float(np.mean(values)), method))
            else:
                partial.append(method)
        complete.sort(key=lambda t: (-t[0], t[1]))
        ranked = _ranks([mean for mean, _ in complete])
        return ([(r, method, mean) for r, (mean, method) in zip(ranked, complete)]
                + [(None, m, None) for m in sorted(partial)])

    def cell_ranking(self, key: CellKey) -> list[tuple[int, Cell]]:
        cells = sorted(self.ranked.get(key, {}).values(), key=lambda c: (-c.mean, c.method))
        return list(zip(_ranks([c.mean for c in cells]), cells))


def _ranks(values: Sequence[float]) -> list[int]:
    """Competition ranks ("1, 2, 2, 4") of values already sorted best-first; equal values
    (to the displayed precision of 1e-12) share a rank."""
    out: list[int] = []
    for i, v in enumerate(values):
        out.append(out[-1] if i and abs(values[i - 1] - v) < 1e-12 else i + 1)
    return out


@dataclass(frozen=True)
class AcrossTasks:
    """Friedman over independent blocks (tasks that are not uniform controls) of the ranked
    methods present in every cell of each block; ``result`` None with a ``note`` saying why
    when it cannot run."""

    blocks: list[str]
    methods: list[str]
    scores: list[list[float]]  # [block, method]: mean over the block's cells
    result: FriedmanResult | None
    note: str


@dataclass
class Board:
    tasks: dict[str, TaskBoard]
    files: list[str]
    across: AcrossTasks | None = None
    pooled: dict[str, TaskBoard] = field(default_factory=dict)  # board task -> its draws pooled (:mod:`.pooled`)

    def is_pooled_draw(self, task: TaskBoard) -> bool:
        """A replicate shown through its task's pooled board rather than on its own (a
        replicate whose task has no result on the board is shown like any task)."""
        return bool(task.replicate_of) and task.replicate_of in self.pooled


def load_board(board_dir: Path, resolver: TaskResolver) -> Board:
    """Validate every result file of the board, refuse results above a ceiling, and arrange
    their cells by task and role."""
    from perserbench.runner import result_filename

    check_no_stray_files(board_dir)
    tasks: dict[str, TaskBoard] = {}
    loaded: list[tuple[str, RunResult]] = []
    for path in result_files(board_dir):
        result = validate_result(path, resolver)
        canonical = result_filename(result)
        if path.name != canonical:
            raise PerserbenchError(f"{path}: result files on the board must use their canonical name {canonical} "
                                   "(use `perserbench leaderboard submit`)")
        loaded.append((str(path), result))
        info = resolver.get(result.task_name, str(path))
        board = tasks.setdefault(result.task_name, TaskBoard(
            result.task_name, result.task["version"], result.task["hash"], uniform=info.uniform,
            replicate_of=info.replicate_of))
        role = role_of(result, str(path))
        for cell in cells_of(result, path.name):
            slot = board.part(role).setdefault((cell.scenario, cell.shots), {})
            if cell.method in slot:
                what = f"{cell.method} (other-listener control)" if role == "control" else cell.method
                raise PerserbenchError(
                    f"{path}: {what} on {result.task_name} {cell.scenario} K={cell.shots} is already "
                    f"on the board from {slot[cell.method].file}; keep one of the two files"
                )
            slot[cell.method] = cell
    check_ceilings(loaded)
    for board in tasks.values():
        add_statistics(board)
    ordered = dict(sorted(tasks.items()))
    from perserbench.leaderboard.pooled import pool_draws  # it builds on this module's cells

    pooled = pool_draws(ordered, loaded)
    for board in pooled.values():
        add_statistics(board)
    return Board(ordered, [Path(p).name for p, _ in loaded], across_tasks(list(ordered.values())), pooled)


def add_statistics(board: TaskBoard) -> None:
    """Every per-cell and per-task statistic of one task's board, from its cells."""
    for key in board.cell_keys:
        ranked = board.ranked.get(key, {})
        board.comparisons[key] = compare_to_baseline(ranked)
        board.gains[key] = personalization_gains(ranked, board.controls.get(key, {}))
        board.headroom[key] = headroom_captured(ranked, board.references.get(key, {}))
        board.no_harm[key] = no_harm(ranked)
    board.no_harm_task = no_harm_over_cells(board)


def cells_of(result: RunResult, file: str) -> list[Cell]:
    return cells_from(result.method_name, result.scenarios, result.shots, result.summary, result.listeners,
                      file, result.perserbench_version, str(result.method.get("config_hash", "")))


def cells_from(method: str, scenarios: Sequence[str], shots: Sequence[int], summary: Sequence[SummaryRecord],
               listeners: Sequence[ListenerRecord], file: str, version: str, config_hash: str,
               pooled_from: tuple[str, ...] = ()) -> list[Cell]:
    """The board's cells of one method from a run's summary and per-listener records (a result
    file's own, or those :mod:`.pooled` computes over several draws' episodes)."""
    heads = {(r.scenario, r.shots, r.metric): r for r in summary}
    per_listener: dict[CellKey, dict[str, float]] = defaultdict(dict)
    for rec in listeners:
        per_listener[(rec.scenario, rec.shots)][rec.listener] = getattr(rec, PRIMARY_METRIC)
    out = []
    for scenario in scenarios:
        for k in shots:
            head = heads[(scenario, k, PRIMARY_METRIC)]
            out.append(Cell(method, scenario, k, head.mean, head.ci_low, head.ci_high,
                            heads[(scenario, k, SECONDARY_METRIC)].mean,
                            heads[(scenario, k, "micro_f1")].mean, heads[(scenario, k, "top1")].mean,
                            head.n_listeners, head.n_episodes, dict(sorted(per_listener[(scenario, k)].items())),
                            file, version, config_hash, pooled_from))
    return out


def _paired(a: Cell, b: Cell) -> tuple[float, float, int]:
    """(mean difference a − b, Wilcoxon p) over the common test listeners, from :mod:`perserbench.stats`."""
    from perserbench import stats

    common = sorted(set(a.per_listener) & set(b.per_listener))
    x = np.array([a.per_listener[name] for name in common])
    y = np.array([b.per_listener[name] for name in common])
    delta = float(np.mean(x - y)) if common else math.nan
    p = 1.0 if len(common) < 2 or np.allclose(x, y) else float(stats.paired_test(x, y).p_value)
    return delta, p, len(common)


def _holm_family(raw: dict[str, tuple[float, float, int]]) -> dict[str, Comparison]:
    """Holm-adjust the p-values of one cell's family of tests."""
    from perserbench import stats

    if not raw:
        return {}
    adjusted = stats.holm([p for _, p, _ in raw.values()])
    return {m: Comparison(d, p, float(q), n) for (m, (d, p, n)), q in zip(raw.items(), adjusted)}


def compare_to_baseline(ranked: dict[str, Cell]) -> dict[str, Comparison]:
    """Every ranked method against ``consensus`` in one cell, paired over test listeners,
    Holm-adjusted over the methods of the cell."""
    baseline = ranked.get(BASELINE)
    if baseline is None:
        return {}
    return _holm_family({m: _paired(c, baseline) for m, c in sorted(ranked.items()) if m != BASELINE})


def personalization_gains(ranked: dict[str, Cell], controls: dict[str, Cell]) -> dict[str, Comparison]:
    """Own-support score − other-listener-control score for each method with both (in the same
    configuration) in the cell, paired over listeners (Wilcoxon), Holm-adjusted over the
    methods of the cell. What is left when the support comes from another listener is domain
    adaptation, not personalization."""
    return _holm_family({m: _paired(ranked[m], c) for m, c in sorted(controls.items())
                         if m in ranked and ranked[m].config_hash == c.config_hash})


def headroom_captured(ranked: dict[str, Cell], references: dict[str, Cell]) -> dict[str, dict[str, float | None]]:
    """Per ranked method and ceiling reference present: (method − consensus) / (ceiling − consensus)."""
    baseline = ranked.get(BASELINE)
    if baseline is None:
        return {}
    ceilings = [c for c in CEILINGS if c in references]
    return {m: {c: headroom(cell.mean, baseline.mean, references[c].mean) for c in ceilings}
            for m, cell in sorted(ranked.items()) if m != BASELINE and ceilings}


def _differences(cell: Cell, baseline: Cell) -> dict[str, float]:
    common = set(cell.per_listener) & set(baseline.per_listener)
    return {x: cell.per_listener[x] - baseline.per_listener[x] for x in common}


def no_harm(ranked: dict[str, Cell]) -> dict[str, EquivalenceTest | None]:
    """The do-no-harm TOST of every ranked method against ``consensus`` in one cell."""
    baseline = ranked.get(BASELINE)
    if baseline is None:
        return {}
    return {m: no_harm_test([_differences(c, baseline)]) for m, c in sorted(ranked.items()) if m != BASELINE}


def no_harm_over_cells(task: TaskBoard) -> dict[str, EquivalenceTest | None]:
    """The task's do-no-harm verdict per method: each listener's difference from ``consensus``
    averaged over the cells where both were run (cells share listeners: not independent)."""
    out = {}
    for method in task.methods():
        if method == BASELINE:
            continue
        diffs = [_differences(cells[method], cells[BASELINE]) for cells in task.ranked.values()
                 if method in cells and BASELINE in cells]
        out[method] = no_harm_test(diffs) if diffs else None
    return out


def across_tasks(tasks: Sequence[TaskBoard], alpha: float = ALPHA) -> AcrossTasks:
    """Friedman/Nemenyi with the non-uniform tasks as blocks, each scored by the mean over its
    cells, over the ranked methods that have every cell of every block."""
    blocks = [t for t in tasks if not t.uniform and not t.replicate_of and t.ranked]
    names = [t.name for t in blocks]
    methods = sorted(set.intersection(*({m for _, m, mean in t.overall() if mean is not None} for t in blocks))) \
        if blocks else []
    scores = [[next(mean for _, m, mean in t.overall() if m == method) for method in methods] for t in blocks]
    if len(blocks) < 2:
        note = (f"Friedman test across tasks not run: it needs at least 2 tasks that are not uniform controls "
                f"({len(blocks)} here); the cells of one task share their listeners and episodes, so they are "
                "never used as blocks.")
        return AcrossTasks(names, methods, scores, None, note)
    if len(methods) < 3:
        note = (f"Friedman test across tasks not run: it needs at least 3 ranked methods with every cell of every "
                f"block task ({len(methods)} here).")
        return AcrossTasks(names, methods, scores, None, note)
    return AcrossTasks(names, methods, scores, friedman(np.array(scores), methods, alpha=alpha), "")
