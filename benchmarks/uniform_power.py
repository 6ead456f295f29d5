"""Power of the do-no-harm equivalence tests on the board's uniform controls (issue 13).

For every uniform control on the board and every adaptive method, the TOST against
``consensus`` (margin ±0.01, α = 0.05; :func:`perserbench.stats.no_harm_test`) and its power
at a true difference of 0 with the observed spread of per-listener differences — per task
(each listener's difference averaged over the 8 cells) and per cell (minimum and median over
the cells) — and how many listeners 80% power per cell would take at that spread. Read from
``leaderboard/results`` only, so the figures in docs/generators.md regenerate from the files:

    .venv/bin/python benchmarks/uniform_power.py [--board leaderboard]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy import stats

from perserbench.leaderboard.board import BASELINE, load_board
from perserbench.leaderboard.validate import TaskResolver
from perserbench.stats import NO_HARM_MARGIN


def listeners_for_power(sd: float, power: float = 0.8, margin: float = NO_HARM_MARGIN, alpha: float = 0.05) -> int:
    """Listeners a TOST needs for ``power`` at a true difference of 0 (normal approximation,
    the same one :class:`perserbench.stats.EquivalenceTest` reports its power with)."""
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf((1 + power) / 2)
    return math.ceil((z * sd / margin) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", type=Path, default=Path("leaderboard"))
    args = parser.parse_args()
    board = load_board(args.board, TaskResolver())
    print(f"{'task':32}{'method':13}{'n':>4}{'task Δ':>8}{'verdict':>14}{'power':>7}"
          f"{'cell power min/median':>23}{'n for 80%/cell':>16}")
    for name, task in board.tasks.items():
        if not task.uniform:
            continue
        for method, test in sorted(task.no_harm_task.items()):
            if test is None:
                continue
            cells = [tests[method] for tests in task.no_harm.values() if tests.get(method) is not None]
            # cells where the method *is* consensus (K=1 behind a gate) have no spread: power 1
            powers = [c.power for c in cells]
            spread = [(c.ci_high - c.ci_low) / 2 / stats.t.ppf(0.95, c.n - 1) * math.sqrt(c.n) for c in cells]
            need = max(listeners_for_power(s) for s in spread) if spread else 0
            print(f"{name:32}{method:13}{test.n:4d}{test.mean:+8.3f}{test.verdict:>14}{test.power:7.0%}"
                  f"{min(powers):11.0%} / {float(np.median(powers)):<9.0%}{need:>16d}")
    print(f"(baseline {BASELINE}; margin ±{NO_HARM_MARGIN}; power at a true difference of 0)")


if __name__ == "__main__":
    main()
