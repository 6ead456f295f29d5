"""The report's statistics (all from :mod:`perserbench.stats`), per cell and across tasks.

Which results take part in what is decided by their role (:mod:`perserbench.roles`):

* **ranked** methods get CIs, paired tests among themselves (Holm over all pairs of the cell),
  marks against ``consensus`` and the best, headroom captured, and the Friedman tests;
* **references** (ceilings) get CIs and serve as headroom denominators; they are never
  tested, marked best, or ranked;
* **other-listener controls** get CIs and one paired test each, against the same method with
  the listener's own support: the personalization gain (Holm over the gains of the cell).

Friedman/Nemenyi blocks must be independent samples: within a cell the blocks are the test
listeners; across cells the blocks are **tasks** (each scored by the mean over its cells), never
the K values or scenarios of one task, which share listeners, utterances and episodes. Uniform
controls (task names ending in ``-uniform``) are not blocks either: nothing can be ranked where
personalization cannot help, and each shares its generator's world with its heterogeneous task.

Every ranked method also gets a **do-no-harm verdict** against ``consensus``
(:func:`perserbench.stats.no_harm_test`, TOST), per cell and per task (each listener's
difference averaged over the task's cells).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from perserbench.report.load import CellKey, ComparisonData
from perserbench.roles import BASELINE, CEILINGS, Role, headroom
from perserbench.stats import (
    EquivalenceTest,
    FriedmanResult,
    PairComparison,
    compare_pair,
    friedman,
    hierarchical_bootstrap_ci,
    holm,
    no_harm_test,
)

ALPHA = 0.05
UNIFORM_SUFFIX = "-uniform"


def is_uniform_control(task: str) -> bool:
    """A uniform control task (every listener perceives alike), recognised by its name as the
    built-in ones are (synthetic-uniform, synthetic-confusion-uniform, ...)."""
    return task.endswith(UNIFORM_SUFFIX)


@dataclass(frozen=True)
class MethodCell:
    label: str
    role: Role
    mean: float
    ci_low: float
    ci_high: float
    n_listeners: int
    n_episodes: int
    best: bool = False
    vs_reference: str = ""  # "▲", "▼" or "": against consensus
    worse_than_best: bool = False
    headroom: dict[str, float | None] = field(default_factory=dict)  # ceiling label -> share captured
    no_harm: EquivalenceTest | None = None  # TOST against consensus over listeners

    @property
    def marks(self) -> str:
        return self.vs_reference + ("†" if self.worse_than_best else "")


@dataclass
class CellAnalysis:
    key: CellKey
    methods: dict[str, MethodCell]
    pairs: list[PairComparison]  # ranked methods, every pair
    gains: list[PairComparison]  # a = the method with its own support, b = its other-listener control
    friedman: FriedmanResult | None
    friedman_note: str = ""
    listener_scores: dict[str, list[float]] = field(default_factory=dict)  # label -> per-listener means
    listeners: list[tuple[int, str]] = field(default_factory=list)  # (fold, listener), the order of listener_scores

    def differences(self, a: str, b: str) -> dict[tuple[int, str], float]:
        """Per listener: score of ``a`` − score of ``b``."""
        return {fx: x - y for fx, x, y in zip(self.listeners, self.listener_scores[a], self.listener_scores[b])}

    @property
    def title(self) -> str:
        return f"{self.key[0]} · {self.key[1]} · K={self.key[2]}"


@dataclass
class Analysis:
    data: ComparisonData
    alpha: float
    cells: list[CellAnalysis]
    overall: FriedmanResult | None  # Friedman across tasks
    overall_note: str
    overall_blocks: dict[str, list[CellKey]]  # task -> the cells its block score averages
    overall_scores: np.ndarray | None  # [tasks, ranked methods]
    no_harm: dict[str, dict[str, EquivalenceTest | None]] = field(default_factory=dict)  # task -> label -> test


def _baseline(labels: Sequence[str], data: ComparisonData) -> str | None:
    found = [x for x in labels if data.methods[x].name == BASELINE]
    return found[0] if len(found) == 1 else None


def _ceilings(labels: Sequence[str], data: ComparisonData) -> list[str]:
    """Reference labels that are ceilings, in the display order of :data:`perserbench.roles.CEILINGS`."""
    found = [x for x in labels if data.methods[x].name in CEILINGS]
    return sorted(found, key=lambda x: (CEILINGS.index(data.methods[x].name), x))


def _own(control: str, ranked: Sequence[str], data: ComparisonData) -> str | None:
    """The ranked label run with the listener's own support that ``control`` controls for."""
    c = data.methods[control]
    found = [x for x in ranked if (data.methods[x].name, data.methods[x].config_hash) == (c.name, c.config_hash)]
    return found[0] if len(found) == 1 else None


def _holm_adjusted(pairs: list[PairComparison]) -> list[PairComparison]:
    return [p.with_holm(q) for p, q in zip(pairs, holm([p.p_value for p in pairs]))]


def analyse_cell(data: ComparisonData, key: CellKey, alpha: float = ALPHA) -> CellAnalysis:
    labels = data.methods_in(key)
    ranked = data.methods_in(key, "ranked")
    eps = sorted(data.methods[labels[0]].cells[key])
    # Listeners by name, episodes by index: the order perserbench.metrics.summarize uses, so a
    # single-seed method's CI here is exactly the one in its result file.
    listeners = sorted({(f, x) for f, x, _ in eps}, key=lambda fx: (fx[1], fx[0]))
    per_listener_eps = {fx: [e for e in eps if (e[0], e[1]) == fx] for fx in listeners}
    groups = {label: [np.array([data.methods[label].cells[key][e] for e in per_listener_eps[fx]])
                      for fx in listeners] for label in labels}
    cells: dict[str, MethodCell] = {}
    for label in labels:
        mean, low, high = hierarchical_bootstrap_ci(groups[label])
        cells[label] = MethodCell(label, data.methods[label].role, mean, low, high, len(listeners), len(eps))

    pairs = []
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            first, second = (a, b) if cells[a].mean >= cells[b].mean else (b, a)
            pairs.append(compare_pair(groups[first], groups[second], (first, second)))
    pairs = _holm_adjusted(pairs)
    gains = []
    for control in data.methods_in(key, "control"):
        own = _own(control, ranked, data)
        if own is not None:
            gains.append(compare_pair(groups[own], groups[control], (own, control)))
    gains = _holm_adjusted(gains)

    def p_holm(x: str, y: str) -> PairComparison:
        return next(p for p in pairs if {p.a, p.b} == {x, y})

    best = max(ranked, key=lambda x: (cells[x].mean, x)) if ranked else None
    base = _baseline(ranked, data)
    ceilings = _ceilings(data.methods_in(key, "reference"), data)
    for label in ranked:
        c = cells[label]
        updates: dict[str, object] = {"best": label == best}
        if base and label != base:
            if p_holm(label, base).p_holm <= alpha:
                updates["vs_reference"] = "▲" if c.mean > cells[base].mean else "▼"
            updates["headroom"] = {x: headroom(c.mean, cells[base].mean, cells[x].mean) for x in ceilings}
        if best and label != best:
            updates["worse_than_best"] = p_holm(label, best).p_holm <= alpha
        cells[label] = dataclasses.replace(c, **updates)

    result, note = None, ""
    if len(ranked) < 3:
        note = f"Friedman test over listeners not run: it needs at least 3 ranked methods ({len(ranked)} here)."
    elif len(listeners) < 2:
        note = "Friedman test over listeners not run: it needs at least 2 listeners."
    else:
        scores = np.array([[float(np.mean(groups[m][i])) for m in ranked] for i in range(len(listeners))])
        result = friedman(scores, ranked, alpha=alpha)
    listener_scores = {m: [float(np.mean(g)) for g in groups[m]] for m in labels}
    out = CellAnalysis(key, cells, pairs, gains, result, note, listener_scores, listeners)
    if base:
        for label in ranked:
            if label != base:
                out.methods[label] = dataclasses.replace(out.methods[label],
                                                         no_harm=no_harm_test([out.differences(label, base)]))
    return out


def no_harm_by_task(data: ComparisonData, cells: Sequence[CellAnalysis]) -> dict[str, dict[str, EquivalenceTest | None]]:
    """Per task and ranked method: the do-no-harm TOST on each listener's difference from
    ``consensus`` averaged over the task's cells where both were run."""
    out: dict[str, dict[str, EquivalenceTest | None]] = {}
    for task in data.tasks:
        tcells = [c for c in cells if c.key[0] == task]
        ranked = sorted({x for c in tcells for x in c.methods if data.methods[x].role == "ranked"})
        base = _baseline(ranked, data)
        if base is None:
            continue
        out[task] = {}
        for label in ranked:
            if label == base:
                continue
            diffs = [c.differences(label, base) for c in tcells if label in c.methods and base in c.methods]
            out[task][label] = no_harm_test(diffs) if diffs else None
    return out


def analyse(data: ComparisonData, alpha: float = ALPHA) -> Analysis:
    """All statistics of the report."""
    cells = [analyse_cell(data, key, alpha) for key in data.cell_keys()]
    ranked = sorted({label for label, m in data.methods.items() if m.role == "ranked"})
    blocks = {task: [c.key for c in cells if c.key[0] == task and all(m in c.methods for m in ranked)]
              for task in data.tasks if not is_uniform_control(task)}
    blocks = {task: keys for task, keys in blocks.items() if keys}
    overall, note, scores = None, "", None
    if len(ranked) < 3:
        note = (f"Friedman test across tasks not run: it needs at least 3 ranked methods ({len(ranked)} here). "
                "With two methods, read the paired tests of each cell.")
    elif len(blocks) < 2:
        note = (f"Friedman test across tasks not run: it needs at least 2 tasks with a cell in which all "
                f"{len(ranked)} ranked methods were run ({len(blocks)} here; uniform controls are not blocks). The "
                "cells of one task share their listeners, utterances and episodes, so they are not independent "
                "blocks; within a task, read the Friedman test over listeners of each cell.")
    else:
        by_key = {c.key: c for c in cells}
        scores = np.array([[float(np.mean([by_key[k].methods[m].mean for k in keys])) for m in ranked]
                           for keys in blocks.values()])
        overall = friedman(scores, ranked, alpha=alpha)
    return Analysis(data, alpha, cells, overall, note, blocks, scores, no_harm_by_task(data, cells))
