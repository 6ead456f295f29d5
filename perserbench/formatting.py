"""Number formats shared by the comparison report and the leaderboard: fixed precision (so a
rebuild from unchanged results is byte-identical) and one spelling of each kind of number."""

from __future__ import annotations

import math


def fixed(value: float) -> str:
    """A score: three decimals."""
    return f"{value:.3f}"


def signed(value: float) -> str:
    """A difference of scores: three decimals with its sign; "—" when undefined."""
    return "—" if not math.isfinite(value) else f"{value:+.3f}"


def p_value(value: float) -> str:
    """A p-value: three decimals, "<0.001" below that; "—" when the test could not run."""
    return "—" if not math.isfinite(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def share(value: float | None) -> str:
    """Headroom captured as a percentage; "—" where it is undefined (ceiling ≤ consensus)."""
    return "—" if value is None else f"{100 * value:.0f}%"
