"""Do listeners of one fold move together? (the listener tests' independence assumption)

Every paired test on the board treats a cell's test listeners as independent: the unit is the
listener's mean over its episodes. Listeners of one fold share more than the task, though:
one meta-fitted model (and one consensus model) per fold. If a fold's model happened to suit
its listeners, their gains over ``consensus`` would move together, and a test that counts
listeners as independent would be too confident.

This script measures that on the committed board. For every adaptive method, heterogeneous
task and (scenario, K) cell with any difference from ``consensus``, it takes each listener's
gain (mean macro-F1 difference over its episodes) and the one-way intraclass correlation of
those gains by fold, ICC(1) from the ANOVA mean squares (Shrout & Fleiss 1979). 0 means
listeners of one fold are no more alike than listeners of different folds. Estimated from 4
folds of 4 listeners, one cell's ICC is noisy, so the script reports the mean over a method's
cells beside what that mean is when listeners are dealt to folds at random (the same fold
sizes, ``--permutations`` deals; ``p`` is the share of deals whose mean reaches the observed
one): a mean clearly above that null is clustering.

    .venv/bin/python benchmarks/fold_clustering.py [--results leaderboard/results]

``--by draw`` asks the same of the board's *pooled* sections, which test the listeners of five
corpus draws as one sample: listeners of one draw share a whole corpus (its consensus model,
its meta-train listeners), so there the groups are the draws, and the null deals listeners to
draws at random. It then tests one method's gain with the *draws* as the unit (a one-sample
t-test of the five draws' mean gains, ``--method``, default ``calibrate``): the reading that
makes no independence assumption across a draw's listeners at all.

It reads result files only; pandas has no ICC, and the two-line formula did not justify a
dependency (pingouin).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from board_suite import HETEROGENEOUS, UNIFORM, replicates_of
from rich.console import Console
from rich.table import Table

from perserbench.results import EPISODE_KEY, load_result
from perserbench.roles import BASELINE

REFERENCES = ("oracle", "personal")  # fit nothing of their own per fold; only consensus's model is shared


def icc1(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """ICC(1) of ``values`` (``[..., n]``: one row per draw) grouped by ``groups`` (``[n]``),
    one-way random effects with unequal group sizes."""
    onehot = (groups[:, None] == np.unique(groups)[None, :]).astype(float)  # [n, k]
    sizes = onehot.sum(axis=0)
    n, k = onehot.shape
    means = (values @ onehot) / sizes  # [..., k]
    grand = values.mean(axis=-1, keepdims=True)
    between = (sizes * (means - grand) ** 2).sum(axis=-1) / (k - 1)
    within = ((values - means @ onehot.T) ** 2).sum(axis=-1) / (n - k)
    size = (n - (sizes ** 2).sum() / n) / (k - 1)
    denominator = between + (size - 1) * within
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (between - within) / denominator, np.nan)


def listener_gains(results: Path, task: str) -> pd.DataFrame:
    """One row per (method, scenario, K, fold, listener): the mean gain over ``consensus``."""
    frames = [load_result(p).to_frame() for p in sorted(results.glob(f"*__{task}__*.json")) if "__ctl-" not in p.name]
    episodes = pd.concat([f for f in frames if not f.empty])
    baseline = episodes[episodes.method == BASELINE][[*EPISODE_KEY, "macro_f1"]]
    joined = episodes[episodes.method != BASELINE].merge(baseline, on=list(EPISODE_KEY), suffixes=("", "_baseline"))
    joined["gain"] = joined.macro_f1 - joined.macro_f1_baseline
    return joined.groupby(["method", "scenario", "shots", "fold", "listener"], as_index=False)["gain"].mean()


def draw_gains(results: Path, task: str) -> pd.DataFrame:
    """:func:`listener_gains` of ``task`` and of its replicate draws, each row naming its draw."""
    draws = [task, *replicates_of(task)]
    return pd.concat([listener_gains(results, draw).assign(draw=draw) for draw in draws])


def clustering(gains: pd.DataFrame, permutations: int, seed: int = 0, by: str = "fold") -> pd.DataFrame:
    """Per method: cells, mean ICC over them, the mean under random deals of listeners to the
    groups ``by`` names (``fold`` or ``draw``) and its p-value."""
    rng = np.random.default_rng(seed)
    rows = []
    for method, of_method in gains.groupby("method"):
        cells = [(g.gain.to_numpy(), g[by].to_numpy()) for _, g in of_method.groupby(["task", "scenario", "shots"])
                 if np.ptp(g.gain.to_numpy()) > 0 and g[by].nunique() > 1]  # one group (personal: one draw) says nothing
        if not cells:
            continue
        observed = float(np.nanmean([icc1(v, f) for v, f in cells]))
        # Dealing listeners to folds at random = permuting the gains over fixed fold labels.
        null = np.nanmean([icc1(rng.permuted(np.tile(v, (permutations, 1)), axis=1), f) for v, f in cells], axis=0)
        rows.append({"method": method, "cells": len(cells), "mean ICC": observed, "null mean": float(null.mean()),
                     "null 95%": float(np.quantile(null, 0.95)),
                     "p": float((1 + (null >= observed).sum()) / (1 + permutations))})
    return pd.DataFrame(rows)


def draw_level_tests(gains: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per (task, scenario, K): each draw's mean gain of ``method`` and the one-sample t-test
    (scipy) of those means against 0."""
    from scipy import stats

    means = gains[gains.method == method].groupby(["task", "scenario", "shots", "draw"], sort=False).gain.mean()
    rows = []
    for (task, scenario, shots), per_draw in means.groupby(level=[0, 1, 2], sort=False):
        values = per_draw.to_numpy()
        rows.append({"task": task, "cell": f"{scenario} K={shots}", "draws": len(values),
                     "gain per draw": " ".join(f"{v:+.3f}" for v in values), "mean": float(values.mean()),
                     "p": float(stats.ttest_1samp(values, 0.0).pvalue) if np.ptp(values) > 0 else float("nan")})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("leaderboard/results"))
    parser.add_argument("--permutations", type=int, default=2000)
    parser.add_argument("--uniform", action="store_true", help="the uniform controls instead of the heterogeneous tasks")
    parser.add_argument("--by", choices=("fold", "draw"), default="fold",
                        help="group listeners by fold (one task), or by corpus draw (a task pooled with its replicates)")
    parser.add_argument("--method", default="calibrate", help="with --by draw: the method tested with draws as the unit")
    args = parser.parse_args()
    tasks = UNIFORM if args.uniform else HETEROGENEOUS
    gains_of = draw_gains if args.by == "draw" else listener_gains
    gains = pd.concat([gains_of(args.results, task).assign(task=task) for task in tasks])
    table = clustering(gains, args.permutations, by=args.by)
    out = Table(title=f"Intraclass correlation by {args.by} of listener gains over consensus ({', '.join(tasks)})")
    for column in table.columns:
        out.add_column(column, justify="left" if column == "method" else "right")
    for row in table.itertuples(index=False):
        label = f"{row[0]} (reference)" if row[0] in REFERENCES else row[0]
        out.add_row(label, str(row[1]), *(f"{v:+.2f}" for v in row[2:5]), f"{row[5]:.3f}")
    Console().print(out)
    if args.by == "draw":
        tests = draw_level_tests(gains, args.method)
        out = Table(title=f"{args.method} − {BASELINE} with the corpus draws as the unit (one-sample t-test)")
        for column in tests.columns:
            out.add_column(column, justify="left" if column in ("task", "cell", "gain per draw") else "right")
        for row in tests.itertuples(index=False):
            out.add_row(row.task, row.cell, str(row.draws), row[3], f"{row.mean:+.3f}", f"{row.p:.4f}")
        Console().print(out)


if __name__ == "__main__":
    main()
