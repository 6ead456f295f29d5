"""Number formats shared by the board's Markdown and HTML pages (fixed precision, so a
rebuild of an unchanged board is byte-identical)."""

from __future__ import annotations

import math

from perserbench.leaderboard.board import Cell


def fmt(value: float) -> str:
    return f"{value:.3f}"


def with_ci(cell: Cell) -> str:
    return f"{fmt(cell.mean)} [{fmt(cell.ci_low)}, {fmt(cell.ci_high)}]"


def p_value(value: float) -> str:
    return "—" if not math.isfinite(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def share(value: float | None) -> str:
    """Headroom captured as a percentage; "—" where it is undefined (ceiling ≤ consensus)."""
    return "—" if value is None else f"{100 * value:.0f}%"


def signed(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.3f}"
