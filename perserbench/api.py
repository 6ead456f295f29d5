"""The Python API: run a method and compare results from a script or a notebook.

Researchers iterate on a method in a notebook; they should not have to write a plugin package
or read the runner to score a class they just typed. :func:`evaluate` takes a registered name
*or* a :class:`~perserbench.method.Method` class or instance (a class defined in a notebook
travels to the sealed worker processes by value, with cloudpickle) and returns the
:class:`~perserbench.results.RunResult`; :func:`compare` turns results into the comparison
report's tables as pandas DataFrames. The command line is a thin layer over these two
functions, so a number printed by ``perserbench run`` and one returned here come from the
same code path.

Methods run in forkserver processes (DESIGN §2, sealed evaluation). A *script* that calls
:func:`evaluate` therefore needs the usual ``if __name__ == "__main__":`` guard, as with any
``multiprocessing`` program: each worker re-imports the script's main module. A notebook needs
no guard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perserbench.errors import PerserbenchError
from perserbench.results import METRICS, PRIMARY_METRIC, RunResult

if TYPE_CHECKING:
    import pandas as pd

    from perserbench.method import Method
    from perserbench.report import Analysis
    from perserbench.stats import FriedmanResult
    from perserbench.tasks import ResolvedTask

SCENARIO_CHOICES = ("seen", "unseen", "both")


def _scenarios(scenarios: str | Sequence[str] | None) -> list[str] | None:
    """``"both"``/None → None (all of the task's); a single name → a list of one. A bare
    string is never iterated character by character."""
    if scenarios is None:
        return None
    if isinstance(scenarios, str):
        if scenarios not in SCENARIO_CHOICES:
            raise PerserbenchError(f"unknown scenario {scenarios!r}; choose seen, unseen or both")
        return None if scenarios == "both" else [scenarios]
    return list(scenarios)


def _ints(values: int | Sequence[int], what: str) -> list[int]:
    items = [values] if isinstance(values, int) else list(values)
    if not items or any(not isinstance(v, int) or isinstance(v, bool) for v in items):
        raise PerserbenchError(f"{what} must be an integer or a non-empty list of integers, got {values!r}")
    return items


def evaluate(
    method: str | type[Method] | Method,
    task: str | Path | ResolvedTask = "synthetic",
    shots: int | Sequence[int] | None = (5,),
    scenarios: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = (0,),
    config: dict[str, Any] | None = None,
    corpus_options: dict[str, Any] | None = None,
    progress: bool = False,
    control: str = "own",
) -> RunResult:
    """Run ``method`` on ``task`` under the sealed protocol and return its :class:`RunResult`.

    ``method``: a registered name (``perserbench methods``), or a Method class or instance
    that need not be registered anywhere. ``task``: a task name (built-in or in a
    ``$PERSERBENCH_TASKS`` folder), the path of a task ``.toml``, or an already resolved task.
    ``shots``: the K values (each must be one of the task's; None = all of them).
    ``scenarios``: ``"seen"``, ``"unseen"``, ``"both"``/None (all of the task's) or a list.
    ``seeds``: method training seeds. ``config``: option overrides of a *registered* method
    (configure a class or instance yourself). ``corpus_options``: loader options such as
    ``{"root": "IEMOCAP_full_release"}``. ``progress``: a progress bar on stderr.
    ``control``: ``"other-listener"`` runs the other-listener control (adapt on a partner
    test listener's support, score on the listener's own query).

    Nothing is written; save with :func:`perserbench.runner.write_result`. Raises
    :class:`~perserbench.errors.PerserbenchError` on bad input and
    :class:`~perserbench.runner.AuditError` when the method fails the independence audit.
    """
    from perserbench.plugins import describe
    from perserbench.runner import run, total_steps
    from perserbench.tasks import ResolvedTask, load_task

    if isinstance(method, str):
        describe(method, config)  # an unknown name or a bad override fails before any data is loaded
    scenario_list = _scenarios(scenarios)
    seed_list = _ints(seeds, "seeds")
    if isinstance(task, ResolvedTask):
        if corpus_options:
            raise PerserbenchError("corpus_options apply when the task is loaded; this task is already resolved")
        resolved = task
    else:
        resolved = load_task(task, corpus_options)
    shot_list = list(resolved.spec.episodes.shots) if shots is None else _ints(shots, "shots")
    if not progress:
        return run(method, resolved, shot_list, scenario_list, seed_list, config, control=control)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from perserbench.runner import method_label

    steps = total_steps(resolved, shot_list, scenario_list or resolved.spec.episodes.scenarios, seed_list)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        job = bar.add_task(f"{method_label(method)} on {resolved.spec.name}", total=steps)
        return run(method, resolved, shot_list, scenario_list, seed_list, config,
                   progress=lambda desc, n: bar.update(job, description=desc, advance=n), control=control)


@dataclass
class Comparison:
    """The comparison report as data.

    ``summary``: one row per (task, scenario, shots, method): mean over listeners with its
    95% hierarchical-bootstrap CI and the report's marks. ``pairs``: one row per pair of
    methods in a cell (paired tests over listeners, Holm-adjusted). ``ranks``: Friedman /
    Nemenyi per cell and across cells (``scope`` "cell" or "overall"), one row per method.
    ``analysis`` is the report's full :class:`~perserbench.report.Analysis`; ``written`` the
    files of the report when ``out`` was given.
    """

    summary: pd.DataFrame
    pairs: pd.DataFrame
    ranks: pd.DataFrame
    analysis: Analysis
    written: list[Path]


def compare(
    results: Sequence[RunResult | str | Path],
    out: str | Path | None = None,
    metric: str = PRIMARY_METRIC,
    alpha: float = 0.05,
) -> Comparison:
    """Compare results as ``perserbench compare`` does and return the report's tables.

    ``results``: :class:`RunResult` objects (e.g. from :func:`evaluate`) and/or result files
    or folders of them. ``out``: a folder to write ``report.md``, ``report.html``,
    ``report.json`` and ``figures/`` into (nothing is written without it). Results must be
    comparable (same task splits, same episodes), or a PerserbenchError names the mismatch.
    """
    from perserbench.report import analyse, combine, write_report
    from perserbench.results import find_result_files, load_result

    if metric not in METRICS:
        raise PerserbenchError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if not 0.0 < alpha < 1.0:
        raise PerserbenchError(f"alpha {alpha} must lie strictly between 0 and 1")
    if isinstance(results, (RunResult, str, Path)):
        results = [results]
    sourced: list[tuple[str, RunResult]] = []
    for i, item in enumerate(results):
        if isinstance(item, RunResult):
            sourced.append((f"<result {i}: {item.method_name} on {item.task_name}>", item))
        else:
            sourced.extend((str(f), load_result(f)) for f in find_result_files([Path(item)]))
    if not sourced:
        raise PerserbenchError("compare needs at least one result")
    an = analyse(combine(sourced, metric), alpha)
    written = write_report(an, Path(out)) if out is not None else []
    return Comparison(*_frames(an), analysis=an, written=written)


def _frames(an: Analysis) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    import pandas as pd

    from perserbench.stats import PairComparison

    cell_cols = ["task", "scenario", "shots"]
    summary, pairs, ranks = [], [], []
    for c in an.cells:
        where = dict(zip(cell_cols, c.key))
        for m in c.methods.values():
            summary.append({**where, "method": m.label, "mean": m.mean, "ci_low": m.ci_low, "ci_high": m.ci_high,
                            "n_listeners": m.n_listeners, "n_episodes": m.n_episodes, "best": m.best,
                            "marks": m.marks})
        pairs.extend({**where, **dataclasses.asdict(p)} for p in c.pairs)
        if c.friedman is not None:
            ranks.extend(_rank_rows({"scope": "cell", **where}, c.friedman))
    if an.overall is not None:
        ranks.extend(_rank_rows({"scope": "overall", "task": None, "scenario": None, "shots": None}, an.overall))
    pair_cols = cell_cols + [f.name for f in dataclasses.fields(PairComparison)]
    rank_cols = ["scope", *cell_cols, "method", "avg_rank", "n_blocks", "chi2", "p_value", "iman_davenport",
                 "iman_davenport_p", "cd"]
    summary_cols = [*cell_cols, "method", "mean", "ci_low", "ci_high", "n_listeners", "n_episodes", "best", "marks"]
    return (pd.DataFrame(summary, columns=summary_cols), pd.DataFrame(pairs, columns=pair_cols),
            pd.DataFrame(ranks, columns=rank_cols))


def _rank_rows(where: dict[str, Any], res: FriedmanResult) -> list[dict[str, Any]]:
    return [{**where, "method": m, "avg_rank": r, "n_blocks": res.n_blocks, "chi2": res.chi2, "p_value": res.p_value,
             "iman_davenport": res.iman_davenport, "iman_davenport_p": res.iman_davenport_p, "cd": res.cd}
            for m, r in zip(res.methods, res.avg_ranks)]
