"""Plausibility: results that could not have been obtained honestly are refused (issue 9).

A result file can be recomputed from its episodes, but the episodes themselves are the
method's word. Three checks catch what recomputation cannot:

* **audit** — a result that is not a reference must record that the runner's independence
  audit ran and passed (an episode re-adapted alone predicted what it predicted in its unit).
  References are exempt: they take the runner's privileged path, are never audited, and are
  never ranked.
* **reference flag** — a method perserbench knows must carry its true role, so a result of
  the ``oracle`` cannot be filed as a ranked entry nor a ranked method hide as a reference.
  Results of plugins not installed here cannot be checked against their class and are taken
  as they say (a reference is only ever shown beside the ranking, never in it).
* **ceiling** — on a task whose board holds the ``oracle`` reference (the true listener model,
  decided optimally for the metric, so no honest method beats it in expectation), a result
  whose mean macro-F1 exceeds the oracle's upper 95% CI bound in any (scenario, K) cell is
  refused, naming the file, the cell, the value and the bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from perserbench.errors import PerserbenchError
from perserbench.results import PRIMARY_METRIC, RunResult
from perserbench.roles import ORACLE

CeilingKey = tuple[str, str, int]  # (task hash, scenario, K)


def check_audit(result: RunResult, source: str) -> None:
    """Refuse a non-reference result without a passed independence audit."""
    if result.is_reference or result.audit_passed:
        return
    why = "did not run" if not result.audit.get("ran") else "did not pass"
    raise PerserbenchError(f"{source}: the independence audit {why} (audit = {result.audit}); the board only "
                           "shows results of sealed runs whose audit passed: re-run the method with `perserbench run`")


def check_reference_flag(result: RunResult, source: str) -> None:
    """A built-in method's result must say whether it is a reference exactly as its class
    does; any other method's result must say it is not (only built-ins may be references).
    Checked without loading any plugin: building the board never runs a plugin's code."""
    from perserbench.method import is_reference
    from perserbench.registry import builtin_names, get_method

    expected = result.method_name in builtin_names() and is_reference(get_method(result.method_name))
    if result.is_reference != expected:
        raise PerserbenchError(
            f"{source}: method.reference is {str(result.is_reference).lower()} but {result.method_name!r} "
            f"{'is' if expected else 'is not'} a reference method; re-run it with `perserbench run`"
        )


@dataclass(frozen=True)
class Bound:
    """The ceiling of one cell: the oracle's upper CI bound and the file it comes from."""

    value: float
    source: str


def ceiling_bounds(results: Iterable[tuple[str, RunResult]]) -> dict[CeilingKey, Bound]:
    """Upper CI bounds of the oracle's macro-F1 per (task hash, scenario, K). Should two
    oracle files cover one cell (the board refuses that elsewhere), the higher bound counts."""
    bounds: dict[CeilingKey, Bound] = {}
    for source, result in results:
        if not (result.is_reference and result.method_name == ORACLE):
            continue
        for row in result.summary:
            if row.metric != PRIMARY_METRIC:
                continue
            key = (str(result.task["hash"]), row.scenario, row.shots)
            if key not in bounds or row.ci_high > bounds[key].value:
                bounds[key] = Bound(row.ci_high, source)
    return bounds


def check_ceilings(results: Sequence[tuple[str, RunResult]]) -> None:
    """Refuse the first non-reference result above the ceiling of its task in any cell."""
    bounds = ceiling_bounds(results)
    if not bounds:
        return
    for source, result in results:
        if result.is_reference:
            continue
        for row in result.summary:
            bound = bounds.get((str(result.task["hash"]), row.scenario, row.shots))
            if row.metric == PRIMARY_METRIC and bound is not None and row.mean > bound.value:
                raise PerserbenchError(
                    f"{source}: {PRIMARY_METRIC} {row.mean:.4f} on {result.task_name} {row.scenario} K={row.shots} is "
                    f"above the ceiling's upper 95% bound {bound.value:.4f} ({ORACLE} reference {bound.source}); no "
                    "honest method beats the true listener model, so this result is refused"
                )
