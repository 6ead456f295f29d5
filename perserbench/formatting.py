"""Number formats shared by the comparison report and the leaderboard: fixed precision (so a
rebuild from unchanged results is byte-identical) and one spelling of each kind of number."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perserbench.stats import EquivalenceTest


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


def verdict(test: EquivalenceTest | None) -> str:
    """A do-no-harm verdict with its mean difference from consensus; an inconclusive one with
    the power of the equivalence test, since a weak test says nothing either way."""
    if test is None:
        return "—"
    extra = f", power {100 * test.power:.0f}%" if test.verdict == "inconclusive" else ""
    return f"{test.verdict} ({signed(test.mean)}{extra})"
