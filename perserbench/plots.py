"""The report's figures (matplotlib, Agg backend, no display needed).

Two figures, used by ``perserbench compare`` and the leaderboard, and :func:`to_png`:

* :func:`shots_curve` — score versus K per method with its CI band;
* :func:`cd_diagram` — Demšar's (2006) critical-difference diagram.

Figures are built with fixed sizes, fonts and colours and no timestamps, so saving them with
``metadata={"Software": None}`` gives byte-identical PNGs for identical inputs.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure

from perserbench.stats import friedman

_COLORS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a", "#e16f24", "#1b7c83",
           "#a40e26", "#4c2889")
_REFERENCE_STYLES = ("--", ":", "-.")  # one dash pattern per reference, so two ceilings stay apart


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, byte-stable: no ``Software`` tag or date in the metadata."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def shots_curve(
    series: Mapping[str, Mapping[str, Sequence[float]]],
    title: str,
    ylabel: str,
    reference: Sequence[str] = (),
) -> Figure:
    """One line per method: mean score at each K with a shaded CI band (``low``..``high``).

    ``series[method]`` has equal-length lists ``shots``, ``mean``, ``low``, ``high``. Methods in
    ``reference`` (e.g. the ``oracle`` and ``personal`` ceilings) are drawn grey, each with its
    own dash pattern, without a band, so they read as bounds rather than competitors. Methods
    are drawn in sorted order so colours are stable across reports.
    """
    fig = Figure(figsize=(7.6, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    all_shots: set[float] = set()
    for i, method in enumerate(sorted(series)):
        data = series[method]
        shots = np.asarray(data["shots"], dtype=float)
        order = np.argsort(shots)
        shots = shots[order]
        mean = np.asarray(data["mean"], dtype=float)[order]
        all_shots.update(shots.tolist())
        color = _COLORS[i % len(_COLORS)]
        if method in reference:
            style = _REFERENCE_STYLES[sorted(reference).index(method) % len(_REFERENCE_STYLES)]
            ax.plot(shots, mean, linestyle=style, color="#57606a", marker="", linewidth=1.5, label=f"{method} (ref.)")
            continue
        ax.plot(shots, mean, marker="o", color=color, linewidth=1.8, markersize=4, label=method)
        low = np.asarray(data["low"], dtype=float)[order]
        high = np.asarray(data["high"], dtype=float)[order]
        ax.fill_between(shots, low, high, color=color, alpha=0.15, linewidth=0)
    if all_shots:
        ticks = sorted(all_shots)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        if len(ticks) > 1 and min(ticks) > 0 and max(ticks) / min(ticks) >= 8:
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
    ax.set_xlabel("K (support items per listener)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # never over the curves
    fig.tight_layout()
    return fig


def cd_diagram(
    scores: np.ndarray,
    methods: Sequence[str],
    title: str,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> Figure:
    """Demšar-style critical-difference diagram of a [blocks, methods] score table.

    An axis of average ranks (1 = best, on the left); each method hangs off the axis at its
    average rank, best half labelled on the left, the rest on the right; thick bars join
    methods whose average ranks differ by less than the Nemenyi critical difference (not
    significantly different at ``alpha``); the CD itself is drawn above the axis. The
    statistics come from :func:`perserbench.stats.friedman`.
    """
    res = friedman(scores, list(methods), alpha=alpha, higher_is_better=higher_is_better)
    k = len(methods)
    ranks = np.asarray(res.avg_ranks)
    order = list(np.argsort(ranks, kind="stable"))
    left = order[: (k + 1) // 2]
    right = order[(k + 1) // 2 :][::-1]
    n_rows = max(len(left), len(right))
    height = 1.3 + 0.28 * n_rows + 0.22 * len(res.groups)
    fig = Figure(figsize=(6.4, height), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    lo, hi = 1.0, float(k)
    # Data coordinates: the rank axis (or the CD bar, if longer) spans the middle 44% of the
    # width, leaving 28% on each side for the labels; y runs downwards from the axis at 0.
    width = max(hi, lo + res.cd) - lo
    pad = width * 0.28 / 0.44
    ax.set_xlim(lo - pad, lo + width + pad)
    ax.set_ylim(-(0.2 + 0.28 * n_rows + 0.22 * len(res.groups)), 1.25)
    ax.axis("off")

    ax.hlines(0, lo, hi, color="black", linewidth=1.0)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.08, color="black", linewidth=1.0)
        ax.text(r, 0.12, str(r), ha="center", va="bottom", fontsize=9)
    for r in np.arange(1.5, k, 1.0):
        ax.vlines(r, 0, 0.04, color="black", linewidth=0.7)

    # Critical difference, above the axis from rank 1.
    # (with few blocks the CD can exceed the whole axis; the bar then runs past rank k.)
    y_cd = 0.62
    ax.hlines(y_cd, lo, lo + res.cd, color="black", linewidth=1.5)
    ax.vlines([lo, lo + res.cd], y_cd - 0.05, y_cd + 0.05, color="black", linewidth=1.0)
    ax.text(lo + res.cd / 2, y_cd + 0.08, f"CD = {res.cd:.2f}", ha="center", va="bottom", fontsize=9)

    # Non-significance bars, just below the axis.
    bar_y = []
    for g, group in enumerate(res.groups):
        y = -0.18 - 0.22 * g
        bar_y.append(y)
        ax.hlines(y, ranks[group].min() - 0.03, ranks[group].max() + 0.03, color="black", linewidth=3.0)
    first_label = (min(bar_y) if bar_y else -0.1) - 0.28

    def label(idx: int, row: int, side: str) -> None:
        y = first_label - 0.28 * row
        x_end = lo - 0.1 * pad if side == "left" else hi + 0.1 * pad
        ax.vlines(ranks[idx], y, 0, color="#57606a", linewidth=0.8)
        ax.hlines(y, min(ranks[idx], x_end), max(ranks[idx], x_end), color="#57606a", linewidth=0.8)
        text = f"{methods[idx]} ({ranks[idx]:.2f})"
        ax.text(x_end + (-0.05 if side == "left" else 0.05), y, text, fontsize=9, va="center",
                ha="right" if side == "left" else "left")

    for row, idx in enumerate(left):
        label(int(idx), row, "left")
    for row, idx in enumerate(right):
        label(int(idx), row, "right")
    verdict = "" if res.p_value <= alpha else "  (Friedman: no significant difference)"
    ax.text((lo - pad + lo + width + pad) / 2, 1.2, title + verdict, ha="center", va="top", fontsize=10)
    return fig
