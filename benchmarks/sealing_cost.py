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
* **arithmetic**: the same work in this one process, with no isolation: every fold's
  ``meta_fit``, then ``adapt_many`` and ``predict_proba`` over exactly the runner's isolation
  units, plus each cell's audit episode adapted alone (``torch._dynamo`` imported first, as the
  forkserver preloads it).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sealing_cost.py --tasks synthetic

Run it on a quiet machine: the sealed figure is the machine's, not this process's (a unit's CPU
reaches no parent's accounting). Numbers are CPU seconds; read the ratios, which one session
measures under the same conditions.
"""

from __future__ import annotations

import argparse
import sys
import time
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


def arithmetic_seconds(method: str, task: ResolvedTask, shots: list[int]) -> tuple[float, int, int]:
    """Process CPU of the method's whole run done in this process, the units it adapted (each
    cell's audit included: the runner forks one for it) and the episodes it predicted (the
    sealed run's records)."""
    torch.set_num_threads(1)
    start, units, predicted = time.process_time(), 0, 0
    for fold in task.folds:
        model = get_method(method)(seed=_derived_seed(0, fold.index))
        torch.manual_seed(_derived_seed(0, fold.index))
        model.meta_fit(MetaTrainSet(task, fold))
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
    return time.process_time() - start, units, predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="synthetic")
    parser.add_argument("--methods", default=",".join(COMPETITORS))
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    for name in args.tasks.split(","):
        task = load_task(name)
        shots = list(task.spec.episodes.shots)
        run("consensus", task, shots[:1])  # starts the forkserver: a suite pays it once per worker
        print(f"{name}: {'method':12s} {'sealed':>8s} {'arithmetic':>10s} {'isolation':>9s} {'share':>6s} "
              f"{'per unit':>9s}")
        totals = [0.0, 0.0]
        for method in args.methods.split(","):
            before = busy_cpu_seconds()
            run(method, task, shots)
            sealed = busy_cpu_seconds() - before
            alone, units, _ = arithmetic_seconds(method, task, shots)
            totals[0] += sealed
            totals[1] += alone
            print(f"{'':{len(name) + 1}s} {method:12s} {sealed:8.1f} {alone:10.1f} {sealed - alone:9.1f} "
                  f"{(sealed - alone) / sealed:6.0%} {1000 * (sealed - alone) / units:7.0f}ms", flush=True)
        print(f"{'':{len(name) + 1}s} {'all':12s} {totals[0]:8.1f} {totals[1]:10.1f} {totals[0] - totals[1]:9.1f} "
              f"{(totals[0] - totals[1]) / totals[0]:6.0%}")


if __name__ == "__main__":
    main()
