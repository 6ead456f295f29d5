"""The board's figures as inline PNG data URIs (the page is one self-contained file)."""

from __future__ import annotations

import base64

import numpy as np

from perserbench.leaderboard.board import CellKey, TaskBoard
from perserbench.results import METRIC_LABELS, PRIMARY_METRIC


def _uri(fig: object) -> str:
    from perserbench.plots import to_png

    return "data:image/png;base64," + base64.b64encode(to_png(fig)).decode("ascii")  # type: ignore[arg-type]


def shots_figure_uri(task: TaskBoard, scenario: str) -> str | None:
    """Score-vs-shots curves (with CI bands) of the ranked methods in one scenario, with the
    references drawn dashed as bounds. Controls are left out: they are read as gains."""
    from perserbench import plots

    series = {}
    for part in (task.ranked, task.references):
        for method in sorted({m for (s, _), cells in part.items() if s == scenario for m in cells}):
            points = [(k, part[(scenario, k)][method]) for k in task.shots
                      if method in part.get((scenario, k), {})]
            series[method] = {"shots": [k for k, _ in points], "mean": [c.mean for _, c in points],
                              "low": [c.ci_low for _, c in points], "high": [c.ci_high for _, c in points]}
    if not series:
        return None
    fig = plots.shots_curve(series, title=f"{task.title} · {scenario}", ylabel=METRIC_LABELS[PRIMARY_METRIC],
                            reference=task.methods("reference"))
    return _uri(fig)


def cd_figure_uri(task: TaskBoard, key: CellKey) -> str | None:
    """Critical-difference diagram of the ranked methods in one cell, listeners as blocks."""
    from perserbench import plots

    cells = task.ranked.get(key, {})
    common = sorted(set.intersection(*(set(c.per_listener) for c in cells.values()))) if cells else []
    if len(cells) < 3 or len(common) < 2:
        return None  # Friedman's test needs >= 3 methods; a CD diagram of two is a paired test
    methods = sorted(cells)
    scores = np.array([[cells[m].per_listener[x] for m in methods] for x in common])
    fig = plots.cd_diagram(scores, methods, title=f"{task.title} · {key[0]} K={key[1]} ({len(common)} listeners)")
    return _uri(fig)
