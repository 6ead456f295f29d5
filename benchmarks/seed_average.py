"""Is a missing ▲ a matter of training noise? A method against ``consensus`` per method seed
and averaged over seeds (issue 14: "seed-averaged where noise demands").

The committed board runs every method with seed 0. A listener's gain then carries the noise
of one training run (the consensus model, the prior, the meta-fit), on top of the listener's
own variation, which no number of seeds removes. This script runs ``--method`` and
``consensus`` with every ``--seed`` on each ``--task`` (sealed, as ``perserbench run`` does;
finished files in ``--runs`` are reused) and prints, per (scenario, K ≥ 5), the mean gain and
the paired Wilcoxon p over listeners for each seed alone and for the listeners' scores
averaged over the seeds. On the board a ▲ needs the p-value after Holm over the cell's five
methods below 0.05; for the smallest p of a cell that is p below 0.01.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seed_average.py --task synthetic-confusion \\
        --task synthetic-prior-shift --method calibrate --seed 0 --seed 1 --seed 2 --runs runs/seeds

``--corpus-seed S`` (repeatable) runs the same comparison on other corpus draws of each task
(other listeners and utterances, the same generator and protocol; one table per draw): is a
missing ▲ the board's draw? (docs/generators.md, "How typical is the board's draw?")

It chooses nothing: a diagnostic of the board's statistics, not a tuning run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from perserbench.api import evaluate
from perserbench.plugins import describe
from perserbench.results import EPISODE_KEY, load_result
from perserbench.roles import BASELINE
from perserbench.runner import planned_filename, write_result
from perserbench.stats import paired_test
from perserbench.tasks import load_task

STRICTEST_HOLM = 0.05 / 5  # the first step of Holm over the five ranked methods of a board cell


def episodes(method: str, task: str, seeds: list[int], runs: Path, corpus_seed: int | None = None) -> pd.DataFrame:
    """The episode records of ``method`` on ``task`` (its corpus drawn with ``corpus_seed``, or
    its own) with ``seeds``, run unless already in ``runs`` (files are named by the split hash,
    which covers the labels, so two draws never share one)."""
    resolved = load_task(task, None if corpus_seed is None else {"seed": corpus_seed})
    spec = resolved.spec.episodes
    path = runs / planned_filename(method, describe(method).config_hash, resolved, seeds, spec.scenarios, spec.shots)
    if not path.exists():
        path = write_result(evaluate(method, resolved, None, None, seeds, progress=True), runs)
    return load_result(path).to_frame()


def seed_table(method: pd.DataFrame, baseline: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """Per (scenario, K ≥ 5) and per seed (and all seeds): mean gain over listeners and p."""
    joined = method.merge(baseline, on=list(EPISODE_KEY), suffixes=("", "_baseline"))
    rows = []
    for (scenario, shots), cell in joined[joined.shots >= 5].groupby(["scenario", "shots"]):
        for label, chosen in [*((f"seed {s}", [s]) for s in seeds), ("seeds averaged", seeds)]:
            per_listener = cell[cell.seed.isin(chosen)].groupby("listener")[["macro_f1", "macro_f1_baseline"]].mean()
            test = paired_test(per_listener.macro_f1.to_numpy(), per_listener.macro_f1_baseline.to_numpy())
            rows.append({"scenario": scenario, "K": shots, "seeds": label,
                         "gain": float((per_listener.macro_f1 - per_listener.macro_f1_baseline).mean()),
                         "p": test.p_value})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", action="append", required=True)
    parser.add_argument("--method", default="calibrate")
    parser.add_argument("--seed", type=int, action="append", required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--corpus-seed", type=int, action="append", default=[],
                        help="redraw each task's corpus with this seed (repeatable); default: the task's own draw")
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    console = Console()
    for task, draw in ((t, d) for t in args.task for d in args.corpus_seed or [None]):
        table = seed_table(episodes(args.method, task, args.seed, args.runs, draw),
                           episodes(BASELINE, task, args.seed, args.runs, draw), args.seed)
        name = task if draw is None else f"{task} (corpus seed {draw})"
        out = Table(title=f"{args.method} − {BASELINE} on {name}: mean gain over listeners, Wilcoxon p "
                          f"(▲: below {STRICTEST_HOLM:g}, a ▲ after Holm over five methods)")
        labels = list(dict.fromkeys(table.seeds))
        out.add_column("cell")
        for label in labels:
            out.add_column(label, justify="right")
        for (scenario, shots), cell in table.groupby(["scenario", "K"], sort=False):
            out.add_row(f"{scenario} K={shots}", *(f"{r.gain:+.3f}  p={r.p:.3f}{' ▲' if r.p < STRICTEST_HOLM else ''}"
                                                   for r in cell.itertuples()))
        console.print(out)


if __name__ == "__main__":
    main()
