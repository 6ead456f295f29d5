"""Run the committed board's default suite: every built-in method on every board task, the
references, and the other-listener control of every adaptive method — skipping what exists.

The board is a pure function of ``leaderboard/results/``; this script is how those files are
produced, so anyone can regenerate every figure on the board (DESIGN §5):

    .venv/bin/python benchmarks/board_suite.py --out leaderboard/results --jobs 2
    .venv/bin/perserbench leaderboard build

What runs where:

* every built-in competitor on every task (heterogeneous generators and their uniform controls);
* ``oracle`` (the ceiling) on every task; ``personal`` (the many-shot personal reference) on the
  heterogeneous tasks, where it is a ceiling worth reading;
* the other-listener control (``--control other-listener``) of every *adaptive* competitor on
  the heterogeneous tasks: personalization gain = own-support score − other-listener score;
* every competitor and ``oracle`` on the heterogeneous tasks' **replicate draws** (the same
  protocol on corpus seeds 2–5, ``<task>-draw<seed>``), which the board pools with their task.
  No ``personal`` (its per-episode fine-tuning costs more than all else together) and no
  controls there: the pooled tables rank, test and take headroom against the oracle.

A run whose result file already exists (same method, task, config and split hash) is skipped,
so an interrupted regeneration resumes. ``--jobs N`` runs N runs at once in N long-lived
worker processes (each imports perserbench and starts its sealed forkserver once, then takes
runs from a queue, longest expected first). A result is a function of its inputs only, never
of the order or the process it ran in, so ``--jobs`` changes the wall time and nothing else.
It prints the wall time of each run and of the whole invocation (``benchmarks/suite_time.py``
times the competitors' part, the figure README reports).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from perserbench.api import evaluate
from perserbench.errors import PerserbenchError
from perserbench.plugins import describe
from perserbench.runner import planned_filename, write_result
from perserbench.tasks import ResolvedTask, load_task, load_task_spec, task_names

HETEROGENEOUS = ("synthetic", "synthetic-confusion", "synthetic-prior-shift")
UNIFORM = ("synthetic-uniform", "synthetic-confusion-uniform", "synthetic-prior-shift-uniform")


def replicates_of(task: str) -> tuple[str, ...]:
    """The replicate draws of ``task``: the task specs that say ``replicates = "<task>"``."""
    return tuple(name for name in task_names() if load_task_spec(name).replicate_of == task)


# The default suite (issue 14's time budget) is HETEROGENEOUS + UNIFORM; the board adds these.
REPLICATES = tuple(name for task in HETEROGENEOUS for name in replicates_of(task))
BOARD_TASKS = HETEROGENEOUS + UNIFORM + REPLICATES
COMPETITORS = ("consensus", "calibrate", "finetune", "maml", "meta-perser", "protonet")
NON_ADAPTIVE = ("consensus",)
# Relative cost of one run (unloaded seconds on `synthetic`, 2 cores, one run at a time):
# the queue starts the longest runs first so that no long run is left alone at the end.
EXPECTED_COST = {"personal": 1000.0, "finetune": 35.0, "meta-perser": 34.0, "maml": 33.0, "protonet": 23.0,
                 "calibrate": 22.0, "consensus": 20.0, "oracle": 5.0}


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    control: str


@dataclass(frozen=True)
class Outcome:
    """One planned run: where its result is and how long it took (0 and ``skipped`` when the
    result already existed)."""

    run: Run
    seconds: float
    file: str
    skipped: bool


def plan(tasks: list[str], methods: list[str], references: bool = True, controls: bool = True) -> list[Run]:
    """The runs, in the order they are listed."""
    runs = []
    for task in tasks:
        ceilings = (["oracle"] + (["personal"] if task in HETEROGENEOUS else [])) if references else []
        runs += [Run(task, m, "own") for m in [*methods, *ceilings]]
        if controls and task in HETEROGENEOUS:
            runs += [Run(task, m, "other-listener") for m in methods if m not in NON_ADAPTIVE]
    return runs


def existing(run: Run, out: Path) -> Path | None:
    """The run's result file if it is already in ``out``: the file this run would write (the
    method's default config, seed 0, every scenario and K of the task), so a file of an
    older default config or an earlier version of the task is run again, not kept."""
    task = _task(run.task)
    episodes = task.spec.episodes
    path = out / planned_filename(run.method, describe(run.method).config_hash, task, [0], episodes.scenarios,
                                  episodes.shots, run.control)
    return path if path.exists() else None


@lru_cache(maxsize=8)
def _task(name: str) -> ResolvedTask:
    """Each task resolved once per worker: the queue is ordered by method cost, so a worker
    takes the runs of several tasks in turn (the board's tasks are small synthetic corpora)."""
    return load_task(name)


def execute_one(run: Run, out: Path) -> Outcome:
    start = time.perf_counter()
    result = evaluate(run.method, _task(run.task), shots=None, control=run.control)
    path = write_result(result, out)
    return Outcome(run, time.perf_counter() - start, path.name, skipped=False)


def execute(runs: Iterable[Run], out: Path, jobs: int = 1,
            report: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run every planned run whose result is not in ``out`` yet, ``jobs`` at a time."""
    out.mkdir(parents=True, exist_ok=True)
    done: list[Outcome] = []

    def note(outcome: Outcome) -> None:
        done.append(outcome)
        if report:
            report(outcome)

    todo = []
    for run in runs:
        found = existing(run, out)
        if found:
            note(Outcome(run, 0.0, found.name, skipped=True))
        else:
            todo.append(run)
    todo.sort(key=lambda r: -EXPECTED_COST.get(r.method, 30.0))
    if jobs <= 1:
        for run in todo:
            note(execute_one(run, out))
        return done
    # spawn: each worker is a fresh interpreter (no copy of this process's state), which
    # then starts its own sealed forkserver once and keeps it for every run it takes.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: set[Future[Outcome]] = {pool.submit(execute_one, run, out) for run in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                note(future.result())
    return done


def print_outcome(outcome: Outcome) -> None:
    run = outcome.run
    what = f"{run.task:32s} {run.method:12s} {run.control:15s}"
    if outcome.skipped:
        print(f"skip {what} ({outcome.file})", flush=True)
    else:
        print(f"ran  {what} {outcome.seconds:6.0f}s -> {outcome.file}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("leaderboard/results"))
    parser.add_argument("--tasks", default=",".join(BOARD_TASKS))
    parser.add_argument("--methods", default=",".join(COMPETITORS))
    parser.add_argument("--no-references", action="store_true",
                        help="skip oracle/personal (e.g. when several invocations share the work)")
    parser.add_argument("--no-controls", action="store_true", help="skip the other-listener control runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one worker process each)")
    args = parser.parse_args()
    runs = plan(args.tasks.split(","), args.methods.split(","), not args.no_references, not args.no_controls)
    start = time.perf_counter()
    outcomes = execute(runs, args.out, args.jobs, print_outcome)
    ran = [o for o in outcomes if not o.skipped]
    print(f"{len(ran)} runs ({len(outcomes) - len(ran)} skipped) in {time.perf_counter() - start:.0f}s wall "
          f"with --jobs {args.jobs}")


if __name__ == "__main__":
    try:
        main()
    except PerserbenchError as exc:
        sys.exit(f"error: {exc}")
