"""What sealed evaluation costs: each method's arithmetic alone against its sealed run, in one session.

The sealed runner (DESIGN §2) meta-fits each fold in a fold worker and forks a fresh process for
every isolation unit (one episode of each test listener) and for every cell's audit, so no
method can carry one episode's labels into another. That safety has a price in CPU, paid per
unit (the fork, the copy-on-write faults of a fresh process, its exit) and per fold worker,
whatever the method computes. This script measures it, so the suite's time (issue 14's budget,
``suite_time.py``) can be split into what the protocol costs and what the methods cost:

* **sealed**: the CPU the whole machine spends busy over ``perserbench.runner.run`` of the
  method on the task (every fold, both scenarios, every K, seed 0), after a warm-up run has
  started the sealed forkserver (a suite pays that once per worker, not per run);
* **arithmetic**: the same work in this one process, with no isolation, in two parts: every
  fold's ``meta_fit`` (paid per fold), then ``adapt_many`` and ``predict_proba`` over exactly
  the runner's isolation units plus each cell's audit episode adapted alone (paid per unit)
  (``torch._dynamo`` imported first, as the forkserver preloads it). ``--arithmetic-only``
  measures this alone: it is this process's CPU, so two such runs may share 2 cores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sealing_cost.py --tasks synthetic

Run it on a quiet machine: the sealed figure is the machine's, not this process's (a unit's CPU
reaches no parent's accounting). Numbers are CPU seconds; read the ratios, which one session
measures under the same conditions.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch._dynamo  # preloaded by the forkserver: its import is not the arithmetic's cost

sys.path.insert(0, str(Path(__file__).resolve().parent))

from board_suite import COMPETITORS
from suite_time import busy_cpu_seconds, machine

from perserbench.episodes import Items, MetaTrainSet, episode_items, sample_episodes
from perserbench.registry import get_method
from perserbench.runner import _derived_seed, audit_sample, isolation_units, run
from perserbench.tasks import SCENARIOS, ResolvedTask, load_task


@dataclass(frozen=True)
class Arithmetic:
    """A method's whole run done in this process: the CPU of its meta-fits and of its
    adaptation (``adapt_many`` and ``predict_proba`` over every unit, each cell's audit
    included), the units it adapted (the runner forks one per unit) and the episodes it
    predicted (the sealed run's records). Meta-fitting is paid once per fold whatever the
    protocol's episode count; adaptation and isolation are paid per unit."""

    meta_fit_s: float
    adapt_s: float
    units: int
    predicted: int

    @property
    def seconds(self) -> float:
        return self.meta_fit_s + self.adapt_s


def arithmetic(method: str, task: ResolvedTask, shots: list[int]) -> Arithmetic:
    torch.set_num_threads(1)
    meta_fit_s = adapt_s = 0.0
    units = predicted = 0
    for fold in task.folds:
        start = time.process_time()
        model = get_method(method)(seed=_derived_seed(0, fold.index))
        torch.manual_seed(_derived_seed(0, fold.index))
        model.meta_fit(MetaTrainSet(task, fold))
        meta_fitted = time.process_time()
        meta_fit_s += meta_fitted - start
        for scenario in task.spec.episodes.scenarios:
            for k in shots:
                episodes = sample_episodes(task, fold, scenario, k)
                if not episodes:
                    continue
                audited, shown = audit_sample(task, episodes, (0, fold.index, SCENARIOS.index(scenario), k))
                support, query, _ = episode_items(task, audited)
                model.adapt_many([support])[0].predict_proba(Items(query.x[shown]))
                units_of_cell = isolation_units(episodes)
                for unit in units_of_cell:
                    items = [episode_items(task, ep) for ep in unit]
                    for predictor, (_, query, _) in zip(model.adapt_many([s for s, _, _ in items]), items, strict=True):
                        predictor.predict_proba(query)
                        predicted += 1
                units += 1 + len(units_of_cell)
        adapt_s += time.process_time() - meta_fitted
    return Arithmetic(meta_fit_s, adapt_s, units, predicted)


def row(label: str, alone: Arithmetic, sealed: float | None) -> str:
    """One table row: the arithmetic and its split, and, when the sealed run was measured, the
    isolation (sealed minus arithmetic), its share and its cost per unit (none for a total)."""
    numbers = f"{alone.seconds:10.1f} {alone.meta_fit_s:8.1f} {alone.adapt_s:7.1f}"
    if sealed is None:
        return f"{label:12s} {numbers}"
    isolation = sealed - alone.seconds
    per_unit = f"{1000 * isolation / alone.units:7.0f}ms" if alone.units else ""
    return f"{label:12s} {sealed:8.1f} {numbers} {isolation:9.1f} {isolation / sealed:6.0%} {per_unit:>9s}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="synthetic")
    parser.add_argument("--methods", default=",".join(COMPETITORS))
    parser.add_argument("--arithmetic-only", action="store_true",
                        help="skip the sealed runs: only the in-process arithmetic, split into meta-fitting and "
                             "adaptation (this process's own CPU, so two of these may share a 2-core machine)")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    for name in args.tasks.split(","):
        task = load_task(name)
        shots = list(task.spec.episodes.shots)
        if not args.arithmetic_only:
            run("consensus", task, shots[:1])  # starts the forkserver: a suite pays it once per worker
        header = f"{'arithmetic':>10s} {'meta_fit':>8s} {'adapt':>7s}"
        if not args.arithmetic_only:
            header = f"{'sealed':>8s} {header} {'isolation':>9s} {'share':>6s} {'per unit':>9s}"
        print(f"{name}: {'method':12s} {header}")
        indent = " " * (len(name) + 1)  # under "name: "

        sealed_total: float | None = None if args.arithmetic_only else 0.0
        meta_fit_total = adapt_total = 0.0
        for method in args.methods.split(","):
            sealed = None
            if sealed_total is not None:
                before = busy_cpu_seconds()
                run(method, task, shots)
                sealed = busy_cpu_seconds() - before
                sealed_total += sealed
            alone = arithmetic(method, task, shots)
            meta_fit_total += alone.meta_fit_s
            adapt_total += alone.adapt_s
            print(indent, row(method, alone, sealed), flush=True)
        print(indent, row("all", Arithmetic(meta_fit_total, adapt_total, units=0, predicted=0), sealed_total),
              flush=True)


if __name__ == "__main__":
    main()
