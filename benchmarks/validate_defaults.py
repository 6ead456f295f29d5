"""Choose method defaults on a *validation split of meta-train listeners* — never on test
listeners, never on held-out audio.

For listener fold F of a task, the fold's meta-train listeners are split into a sub-train set
and validation listeners; a method is meta-fitted on the sub-train listeners only and scored
on `seen`-scenario episodes of the validation listeners (training-pool utterances, which the
real fold trains on anyway). The real fold's test listeners and the held-out pool are not
touched. Usage:

    .venv/bin/python benchmarks/validate_defaults.py --task synthetic --method finetune \
        --grid lr=0.01,0.05,0.2 --grid steps=5,10,20

prints mean macro-F1 per K (and the mean over K) for every grid point, with consensus as the
reference row.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from perserbench.episodes import MetaTrainSet
from perserbench.registry import create_method
from perserbench.runner import _derived_seed, _evaluate_cell
from perserbench.tasks import ListenerFold, ResolvedTask, load_task


def validation_fold(task: ResolvedTask, fold_index: int, fraction: float, seed: int) -> ListenerFold:
    """Sub-train / validation split of one fold's meta-train listeners (validation listeners
    must be eligible in `seen`: >= max shots + min query labels in the training pool)."""
    fold = task.folds[fold_index]
    need = task.spec.max_shots + task.spec.episodes.min_query
    eligible = [name for name in fold.train if len(task.listener_rows(name, "seen")) >= need]
    rng = np.random.default_rng(seed)
    n_val = max(1, round(fraction * len(eligible)))
    val = sorted(rng.choice(eligible, size=n_val, replace=False).tolist())
    train = tuple(name for name in fold.train if name not in val)
    return ListenerFold(index=fold.index, train=train, test={"seen": tuple(val), "unseen": ()})


def score(task: ResolvedTask, fold: ListenerFold, method: str, overrides: dict[str, str], seed: int) -> dict[int, float]:
    torch.manual_seed(_derived_seed(seed, fold.index))
    model = create_method(method, overrides, seed=_derived_seed(seed, fold.index))
    model.meta_fit(MetaTrainSet(task, fold))
    out = {}
    for k in task.spec.episodes.shots:
        torch.manual_seed(_derived_seed(seed, fold.index, 0, k))
        records = _evaluate_cell(model, task, fold, "seen", k, seed)
        by_listener: dict[str, list[float]] = {}
        for r in records:
            by_listener.setdefault(r.listener, []).append(r.macro_f1)
        out[k] = float(np.mean([np.mean(v) for v in by_listener.values()]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--method", required=True)
    parser.add_argument("--grid", action="append", default=[], help="key=v1,v2,... (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="fixed key=value override (repeatable)")
    parser.add_argument("--folds", default="0", help="comma-separated listener folds to validate on")
    parser.add_argument("--fraction", type=float, default=0.3, help="share of meta-train listeners held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    task = load_task(args.task)
    folds = [validation_fold(task, int(f), args.fraction, args.seed) for f in args.folds.split(",")]
    for f in folds:
        print(f"fold {f.index}: {len(f.train)} sub-train listeners, validation listeners {list(f.test['seen'])}")
    fixed = dict(kv.split("=", 1) for kv in args.set)
    keys = [g.split("=", 1)[0] for g in args.grid]
    values = [g.split("=", 1)[1].split(",") for g in args.grid]
    rows = [("consensus", {})] + [(args.method, {**fixed, **dict(zip(keys, combo))})
                                  for combo in itertools.product(*values)]
    shots = task.spec.episodes.shots
    print("method".ljust(64) + "".join(f"K={k}".rjust(8) for k in shots) + "mean".rjust(8) + "time".rjust(8))
    for method, overrides in rows:
        start = time.perf_counter()
        per_fold = [score(task, f, method, overrides, args.seed) for f in folds]
        means = {k: float(np.mean([p[k] for p in per_fold])) for k in shots}
        label = method + (" " + " ".join(f"{k}={v}" for k, v in overrides.items()) if overrides else "")
        print(label[:64].ljust(64) + "".join(f"{means[k]:8.3f}" for k in shots)
              + f"{np.mean(list(means.values())):8.3f}" + f"{time.perf_counter() - start:7.1f}s", flush=True)


if __name__ == "__main__":
    main()
