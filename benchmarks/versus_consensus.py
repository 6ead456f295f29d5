"""Every method's macro-F1 next to ``consensus``, with a paired test per (scenario, K) cell.

Reads the RunResult files of one task (``perserbench run ... --out DIR`` for each method) and
prints, per scenario and K, each method's mean macro-F1 over listeners with its 95% CI, the
mean paired difference to ``consensus`` and the two-sided Wilcoxon p-value over test
listeners (:func:`perserbench.stats.paired_test`). Used for issue 3's report on ``synthetic``
and for the ``synthetic-uniform`` sanity check (no method may beat consensus significantly
there). Usage:

    .venv/bin/python benchmarks/versus_consensus.py DIR [--alpha 0.05]

A thin script, not a command: ``perserbench compare`` is the full report; this prints just
the one comparison issue 3 asks for, in a form that is quick to read in a terminal.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perserbench.errors import PerserbenchError
from perserbench.results import RunResult, load_result
from perserbench.stats import paired_test


@dataclass(frozen=True)
class Cell:
    """One method in one (scenario, K) cell, compared with consensus over the same listeners."""

    method: str
    scenario: str
    shots: int
    mean: float
    ci_low: float
    ci_high: float
    diff: float
    p_value: float


def listener_scores(result: RunResult, scenario: str, shots: int) -> dict[str, float]:
    return {r.listener: r.macro_f1 for r in result.listeners if r.scenario == scenario and r.shots == shots}


def compare(results: list[RunResult], reference: str = "consensus") -> list[Cell]:
    """Cells for every method and (scenario, K) the reference result also has."""
    by_name = {r.method_name: r for r in results}
    if reference not in by_name:
        raise PerserbenchError(f"no {reference!r} result among {sorted(by_name)}; run it on the same task first")
    ref = by_name[reference]
    hashes = {r.task["hash"] for r in results}
    if len(hashes) != 1:
        raise PerserbenchError(f"results come from different task splits (hashes {sorted(hashes)}); compare one task")
    out = []
    for result in results:
        summary = {(s.scenario, s.shots): s for s in result.summary if s.metric == "macro_f1"}
        for (scenario, shots), s in sorted(summary.items()):
            mine, theirs = listener_scores(result, scenario, shots), listener_scores(ref, scenario, shots)
            common = sorted(set(mine) & set(theirs))
            if not common:
                continue
            a = np.array([mine[n] for n in common])
            b = np.array([theirs[n] for n in common])
            test = paired_test(a, b)
            out.append(Cell(result.method_name, scenario, shots, s.mean, s.ci_low, s.ci_high, test.mean_diff,
                            test.p_value))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    results = [load_result(p) for p in sorted(args.directory.glob("*.json"))]
    cells = compare(results)
    print(f"task {results[0].task_name}  (diff and Wilcoxon p vs consensus, paired over test listeners)")
    print(f"{'method':12s} {'scen':6s} {'K':>3s}  {'macro-F1 [95% CI]':22s} {'diff':>7s} {'p':>7s}")
    for c in sorted(cells, key=lambda c: (c.scenario, c.shots, c.method)):
        mark = " *" if c.p_value < args.alpha and c.diff > 0 else (" -" if c.p_value < args.alpha else "")
        print(f"{c.method:12s} {c.scenario:6s} {c.shots:3d}  {c.mean:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]  "
              f"{c.diff:+7.3f} {c.p_value:7.4f}{mark}")
    print("* = significantly better than consensus, - = significantly worse (two-sided, alpha "
          f"{args.alpha}, not corrected for multiple cells)")


if __name__ == "__main__":
    main()
