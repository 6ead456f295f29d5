"""Evidence for the choice of the primary metric (issue 13): per-episode vs listener-pooled macro-F1.

From a folder of result files (several methods, tasks including uniform controls, several seeds
of some methods) this prints, per metric, the three numbers docs/metrics.md decides on:

* **run-to-run SD**: the SD across training seeds of a method's cell score (mean over listeners),
  averaged over (task, method, cell); beside it the SD *between methods* in the cell, since a
  metric is only as useful as its signal (method differences) is large against its noise
  (seed-to-seed changes). Both metrics are computed from the same predictions.
* **bias on the uniform controls**: method − consensus on tasks where every listener
  perceives alike, where personalization cannot help and an unbiased metric gives ~0 to an
  adaptation that only adds noise; averaged over cells, per method.
* **paired signal over listeners**: the median |t| of method − consensus over the test
  listeners on the heterogeneous tasks (what the board's paired tests see);
* **ranking agreement**: Kendall's tau (``scipy.stats.kendalltau``) between the two metrics'
  rankings of the methods in each (task, cell), and how many cells rank identically.

It also counts how often a class is absent from an episode's truth (the mechanism: such a
class drops out of the per-episode macro-F1 unless predicted, and then scores 0).

    python benchmarks/metric_evidence.py runs/ --uniform synthetic-dev-uniform --out docs/metric-evidence.md

All numbers come from :mod:`perserbench.metrics` (the one metric module); nothing is tuned here.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from scipy import stats

from perserbench.metrics import pooled_f1
from perserbench.results import (
    POOLED_METRIC,
    EpisodeRecord,
    RunResult,
    find_result_files,
    load_result,
)
from perserbench.roles import BASELINE, role_of

METRICS = ("macro_f1", POOLED_METRIC)
Cell = tuple[str, str, int]  # (task, scenario, K)


def listener_scores(episodes: Sequence[EpisodeRecord], metric: str) -> dict[str, float]:
    """Each listener's score: the mean of its episodes' ``macro_f1``, or its pooled macro-F1
    (counts over all given episodes, seeds included)."""
    by_listener: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for rec in episodes:
        by_listener[rec.listener].append(rec)
    if metric == POOLED_METRIC:
        return {x: pooled_f1(recs) for x, recs in by_listener.items()}
    return {x: float(np.mean([getattr(r, metric) for r in recs])) for x, recs in by_listener.items()}


def cell_score(episodes: Sequence[EpisodeRecord], metric: str) -> float:
    """Mean over listeners of the listener's score."""
    return float(np.mean(list(listener_scores(episodes, metric).values())))


@dataclass(frozen=True)
class MetricEvidence:
    metric: str
    seed_sd: float  # mean over (task, method, cell) with >= 2 seeds of the SD across seeds
    n_seed_cells: int
    between_method_sd: float  # mean over (task, cell) of the SD across methods
    noise_to_signal: float  # seed_sd / between_method_sd
    uniform_bias: dict[str, float]  # method -> mean over uniform cells of (method − consensus)
    uniform_abs_bias: float  # mean over methods of |bias|
    paired_t: float  # median over (non-uniform cell, method) of |t| of method − consensus over listeners


@dataclass(frozen=True)
class Agreement:
    n_cells: int
    mean_tau: float
    min_tau: float
    identical: int  # cells whose two rankings are the same


def _load(paths: Sequence[Path]) -> list[RunResult]:
    results = []
    for f in find_result_files(list(paths)):
        r = load_result(f)
        if role_of(r, str(f)) == "ranked":
            results.append(r)
    return results


def _label(r: RunResult, configs: dict[str, set[str]]) -> str:
    """The method's name, with its config hash when the name appears under several configs."""
    chash = str(r.method.get("config_hash", ""))
    return f"{r.method_name}@{chash[:6]}" if len(configs[r.method_name]) > 1 else r.method_name


def _episodes(results: Sequence[RunResult]) -> dict[tuple[str, Cell], list[EpisodeRecord]]:
    """(method, cell) → every episode record of every seed (several files of one method merge)."""
    configs: dict[str, set[str]] = defaultdict(set)
    for r in results:
        configs[r.method_name].add(str(r.method.get("config_hash", "")))
    out: dict[tuple[str, Cell], list[EpisodeRecord]] = defaultdict(list)
    for r in results:
        for rec in r.episodes:
            out[(_label(r, configs), (r.task_name, rec.scenario, rec.shots))].append(rec)
    return out


def evidence(results: Sequence[RunResult], uniform: Sequence[str]) -> tuple[list[MetricEvidence], Agreement, dict]:
    episodes = _episodes(results)
    cells = sorted({cell for _, cell in episodes})
    methods_in = {cell: sorted(m for m, c in episodes if c == cell) for cell in cells}
    scores = {(m, cell, metric): cell_score(recs, metric) for (m, cell), recs in episodes.items() for metric in METRICS}
    out = []
    for metric in METRICS:
        seed_sds = []
        for (m, cell), recs in episodes.items():
            seeds = sorted({r.seed for r in recs})
            if len(seeds) >= 2:
                per_seed = [cell_score([r for r in recs if r.seed == s], metric) for s in seeds]
                seed_sds.append(float(np.std(per_seed, ddof=1)))
        between = [float(np.std([scores[(m, cell, metric)] for m in methods_in[cell]], ddof=1))
                   for cell in cells if len(methods_in[cell]) >= 2]
        bias: dict[str, list[float]] = defaultdict(list)
        for cell in cells:
            if cell[0] in uniform and BASELINE in methods_in[cell]:
                for m in methods_in[cell]:
                    if m != BASELINE:
                        bias[m].append(scores[(m, cell, metric)] - scores[(BASELINE, cell, metric)])
        mean_bias = {m: float(np.mean(v)) for m, v in sorted(bias.items())}
        t_values = []
        for cell in cells:
            if cell[0] in uniform or BASELINE not in methods_in[cell]:
                continue
            base = listener_scores(episodes[(BASELINE, cell)], metric)
            for m in methods_in[cell]:
                if m != BASELINE:
                    mine = listener_scores(episodes[(m, cell)], metric)
                    d = np.array([mine[x] - base[x] for x in sorted(base)])
                    if d.std(ddof=1) > 0:
                        t_values.append(abs(d.mean()) / d.std(ddof=1) * np.sqrt(len(d)))
        seed_sd = float(np.mean(seed_sds)) if seed_sds else float("nan")
        between_sd = float(np.mean(between)) if between else float("nan")
        out.append(MetricEvidence(metric, seed_sd, len(seed_sds), between_sd, seed_sd / between_sd,
                                  mean_bias, float(np.mean(np.abs(list(mean_bias.values())))) if mean_bias
                                  else float("nan"), float(np.median(t_values)) if t_values else float("nan")))
    taus, identical = [], 0
    for cell in cells:
        ms = methods_in[cell]
        if len(ms) < 3:
            continue
        a = [scores[(m, cell, METRICS[0])] for m in ms]
        b = [scores[(m, cell, METRICS[1])] for m in ms]
        taus.append(float(stats.kendalltau(a, b).statistic))
        identical += list(np.argsort(a)) == list(np.argsort(b))
    agreement = Agreement(len(taus), float(np.mean(taus)) if taus else float("nan"),
                          float(np.min(taus)) if taus else float("nan"), identical)
    return out, agreement, absent_classes(itertools.chain.from_iterable(episodes.values()))


def absent_classes(episodes: itertools.chain) -> dict[str, float]:
    """Share of (episode, class) pairs with the class absent from the truth, and the share of
    those where it was predicted anyway (a per-episode F1 of 0 for that class)."""
    absent = predicted = total = 0
    for rec in episodes:
        for tp, fp, fn in zip(rec.tp, rec.fp, rec.fn):
            total += 1
            if tp + fn == 0:
                absent += 1
                predicted += fp > 0
    return {"absent_share": absent / total if total else float("nan"),
            "absent_but_predicted_share": predicted / absent if absent else float("nan")}


def render(ev: list[MetricEvidence], agreement: Agreement, absent: dict, results: Sequence[RunResult],
           uniform: Sequence[str]) -> str:
    tasks = sorted({r.task_name for r in results})
    configs: dict[str, set[str]] = defaultdict(set)
    for r in results:
        configs[r.method_name].add(str(r.method.get("config_hash", "")))
    methods = sorted({_label(r, configs) for r in results})
    seeds = {m: sorted({s for r in results if _label(r, configs) == m for s in r.seeds}) for m in methods}
    lines = [f"Inputs: {len(results)} result files; tasks {', '.join(tasks)} (uniform controls: "
             f"{', '.join(u for u in uniform if u in tasks) or 'none'}); methods (seeds) "
             + ", ".join(f"{m} {seeds[m]}" for m in methods) + ".", "",
             "| metric | run-to-run SD (seeds) | between-method SD | noise / signal | median paired abs. t vs "
             "consensus | mean abs. bias on uniform controls | "
             + " | ".join(f"bias {m}" for m in sorted(ev[0].uniform_bias)) + " |",
             "|:---|---:|---:|---:|---:|---:|" + "---:|" * len(ev[0].uniform_bias)]
    for e in ev:
        lines.append(f"| {e.metric} | {e.seed_sd:.4f} (n = {e.n_seed_cells}) | {e.between_method_sd:.4f} | "
                     f"{e.noise_to_signal:.3f} | {e.paired_t:.2f} | {e.uniform_abs_bias:.4f} | "
                     + " | ".join(f"{e.uniform_bias[m]:+.4f}" for m in sorted(e.uniform_bias)) + " |")
    lines += ["", (f"Ranking agreement (Kendall tau between the two metrics' rankings of the methods, per cell with "
                  f">= 3 methods): mean {agreement.mean_tau:.3f}, min {agreement.min_tau:.3f}, identical rankings "
                  f"in {agreement.identical} of {agreement.n_cells} cells."), "",
              (f"Classes absent from an episode's truth: {100 * absent['absent_share']:.1f}% of (episode, class) "
              f"pairs; predicted anyway (per-episode F1 0 for that class) in "
              f"{100 * absent['absent_but_predicted_share']:.1f}% of those.")]
    return "\n".join(lines) + "\n"


def main(
    paths: Annotated[list[Path], typer.Argument(help="Result files or folders of them.")],
    uniform: Annotated[list[str] | None, typer.Option("--uniform", help="Uniform-control task names (default: "
                                                      "tasks whose name ends in -uniform).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the table (Markdown) and a .json.")] = None,
) -> None:
    results = _load(paths)
    uniform = list(uniform or sorted({r.task_name for r in results if r.task_name.endswith("-uniform")}))
    ev, agreement, absent = evidence(results, uniform)
    text = render(ev, agreement, absent, results, uniform)
    print(text)
    if out is not None:
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"metrics": [asdict(e) for e in ev],
                                                        "agreement": asdict(agreement), "absent": absent},
                                                       indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    typer.run(main)
