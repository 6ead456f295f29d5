"""Run the committed board's default suite: every built-in method on every board task, the
references, and the other-listener control of every adaptive method — skipping what exists.

The board is a pure function of ``leaderboard/results/``; this script is how those files are
produced, so anyone can regenerate every figure on the board (DESIGN §5):

    .venv/bin/python benchmarks/board_suite.py --out leaderboard/results
    .venv/bin/perserbench leaderboard build

What runs where:

* every built-in competitor on every task (heterogeneous generators and their uniform controls);
* ``oracle`` (the ceiling) on every task; ``personal`` (the many-shot personal reference) on the
  heterogeneous tasks, where it is a ceiling worth reading;
* the other-listener control (``--control other-listener``) of every *adaptive* competitor on
  the heterogeneous tasks: personalization gain = own-support score − other-listener score.

A run whose result file already exists (same method, task, config and split hash) is skipped,
so an interrupted regeneration resumes. It prints the wall time of each run and, per task, the
total of meta-training plus adaptation over the competitors (the suite's cost; README reports it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from perserbench.api import evaluate
from perserbench.errors import PerserbenchError
from perserbench.runner import write_result
from perserbench.tasks import load_task

HETEROGENEOUS = ("synthetic", "synthetic-confusion", "synthetic-prior-shift")
UNIFORM = ("synthetic-uniform", "synthetic-confusion-uniform", "synthetic-prior-shift-uniform")
COMPETITORS = ("consensus", "calibrate", "finetune", "maml", "meta-perser", "protonet")
NON_ADAPTIVE = ("consensus",)


def plan(tasks: list[str], methods: list[str], references: bool = True) -> list[tuple[str, str, str]]:
    """(task, method, control) triples, in the order they run."""
    runs = []
    for task in tasks:
        ceilings = (["oracle"] + (["personal"] if task in HETEROGENEOUS else [])) if references else []
        runs += [(task, m, "own") for m in [*methods, *ceilings]]
        if task in HETEROGENEOUS:
            runs += [(task, m, "other-listener") for m in methods if m not in NON_ADAPTIVE]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("leaderboard/results"))
    parser.add_argument("--tasks", default=",".join(HETEROGENEOUS + UNIFORM))
    parser.add_argument("--methods", default=",".join(COMPETITORS))
    parser.add_argument("--no-references", action="store_true",
                        help="skip oracle/personal (e.g. when several invocations share the work)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cost: dict[str, float] = {}
    for task_name, method, control in plan(args.tasks.split(","), args.methods.split(","), not args.no_references):
        task = load_task(task_name)
        existing = [p for p in args.out.glob(f"{method}__{task_name}__*.json")
                    if p.name.endswith("__ctl-other.json") == (control == "other-listener")]
        if existing:
            print(f"skip {task_name:32s} {method:12s} {control:15s} ({existing[0].name})", flush=True)
            continue
        start = time.perf_counter()
        result = evaluate(method, task, shots=None, control=control)
        path = write_result(result, args.out)
        seconds = time.perf_counter() - start
        if control == "own" and method not in ("oracle", "personal"):
            cost[task_name] = cost.get(task_name, 0.0) + seconds
        print(f"ran  {task_name:32s} {method:12s} {control:15s} {seconds:6.0f}s -> {path.name}", flush=True)
    for task_name, seconds in cost.items():
        print(f"suite cost (competitors, this invocation) {task_name}: {seconds:.0f}s")


if __name__ == "__main__":
    try:
        main()
    except PerserbenchError as exc:
        sys.exit(f"error: {exc}")
