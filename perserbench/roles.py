"""What part a result plays in a comparison: a ranked entry, a reference, or a control.

The board (:mod:`perserbench.leaderboard`) and the comparison report (:mod:`perserbench.report`)
must agree on this, so it is decided here, once (DESIGN §2, "Ceiling, headroom and controls"):

* a **reference** (``result.is_reference``: the synthetic ``oracle``, the many-shot
  ``personal`` reference, the synthetic K-shot ceiling ``bayes-oracle``) used privileged
  information; it is shown as a ceiling and never ranked, tested against ``consensus`` or put
  in a Friedman test;
* an **other-listener control** (``method["control"] == "other-listener"``) adapted on another
  test listener's support; it only serves to measure the personalization gain of the same
  method (own − control) and is never ranked either;
* everything else is a **ranked** entry.
"""

from __future__ import annotations

from typing import Literal

from perserbench.errors import PerserbenchError
from perserbench.results import RunResult

BASELINE = "consensus"  # "one model for everyone": what significance and headroom are measured from
ORACLE = "oracle"  # true listener model (synthetic corpora): the ceiling results are checked against
PERSONAL = "personal"  # many-shot personal reference: a second ceiling, on every corpus
K_SHOT = "bayes-oracle"  # the K-shot ceiling (synthetic corpora): what K labels can reveal at all
CEILINGS = (ORACLE, PERSONAL, K_SHOT)  # headroom denominators, in display order

CONTROL_KEY = "control"
OWN = "own"
OTHER_LISTENER = "other-listener"

Role = Literal["ranked", "reference", "control"]


def control_of(result: RunResult, source: str) -> str:
    """``own`` or ``other-listener``; any other value is refused (a typo must not turn a
    control into a ranked entry)."""
    value = result.method.get(CONTROL_KEY, OWN)
    if value not in (OWN, OTHER_LISTENER):
        raise PerserbenchError(f"{source}: method.{CONTROL_KEY} is {value!r}; expected {OWN!r} or {OTHER_LISTENER!r}")
    return str(value)


def role_of(result: RunResult, source: str) -> Role:
    """The result's role. A reference cannot also be a control: references do not adapt."""
    control = control_of(result, source) == OTHER_LISTENER
    if result.is_reference:
        if control:
            raise PerserbenchError(f"{source}: a reference result cannot be an other-listener control")
        return "reference"
    return "control" if control else "ranked"


def headroom(score: float, baseline: float, ceiling: float) -> float | None:
    """Share of the gap between ``consensus`` and a ceiling that a method closes:
    ``(score − baseline) / (ceiling − baseline)``; 0 = no better than consensus, 1 = at the
    ceiling, negative = worse than consensus. None (undefined) when the ceiling is not above
    consensus, e.g. on uniform listeners, where there is nothing to capture."""
    gap = ceiling - baseline
    return (score - baseline) / gap if gap > 0 else None
