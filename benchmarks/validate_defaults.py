"""Choose method defaults on a *development task* — never on a board task (DESIGN §2).

A development task (``purpose = "development"`` in its TOML, e.g. ``synthetic-dev``: the
synthetic generator with another corpus seed, so other listeners and other utterances) is
never on the leaderboard, so nothing tuned here has seen a board task's listeners or audio.
This script refuses every other task. Each grid point is a full sealed run (all folds, both
scenarios, every K) through the one runner, so what is tuned is exactly what is scored.

    .venv/bin/python benchmarks/validate_defaults.py --task synthetic-dev --method finetune \
        --grid lr=0.02,0.05,0.1 --grid steps=5,10,20
    .venv/bin/python benchmarks/validate_defaults.py --method meta-perser \
        --variant combined=false --variant per_step_lrs=false      # an ablation: defaults, then each off

prints mean macro-F1 per (scenario, K), the mean over cells and the mean difference to
consensus, for every grid point, with consensus as the reference row.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np

from perserbench.errors import PerserbenchError
from perserbench.runner import run
from perserbench.tasks import load_task


def cell_means(result) -> dict[tuple[str, int], float]:
    return {(r.scenario, r.shots): r.mean for r in result.summary if r.metric == "macro_f1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="synthetic-dev")
    parser.add_argument("--method", required=True)
    parser.add_argument("--grid", action="append", default=[], help="key=v1,v2,... (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="fixed key=value override (repeatable)")
    parser.add_argument("--variant", action="append", default=[],
                        help="one extra row per key=value[,key=value], on top of --set (repeatable): an ablation "
                             "is one --variant per component switched off")
    parser.add_argument("--no-defaults", action="store_true",
                        help="skip the method's default row (already measured): only consensus and the variants")
    parser.add_argument("--seed", action="append", type=int, default=None, help="method seed(s) (repeatable)")
    args = parser.parse_args()

    task = load_task(args.task)
    if not task.spec.is_development:
        raise SystemExit(f"error: task {task.spec.name!r} is not a development task (purpose = "
                         f"{task.spec.purpose!r}); defaults are tuned on development tasks only, e.g. synthetic-dev")
    fixed = dict(kv.split("=", 1) for kv in args.set)
    keys = [g.split("=", 1)[0] for g in args.grid]
    values = [g.split("=", 1)[1].split(",") for g in args.grid]
    rows = [("consensus", {})] + [(args.method, {**fixed, **dict(zip(keys, combo))})
                                  for combo in itertools.product(*values)
                                  if not (args.no_defaults and not combo and not fixed)]
    rows += [(args.method, {**fixed, **dict(kv.split("=", 1) for kv in variant.split(","))})
             for variant in args.variant]
    seeds = args.seed or [0]
    reference: dict[tuple[str, int], float] = {}
    header = None
    for method, overrides in rows:
        start = time.perf_counter()
        means = cell_means(run(method, task, task.spec.episodes.shots, seeds=seeds, config_overrides=overrides))
        if header is None:
            header = sorted(means)
            print("method".ljust(48) + "".join(f"{s[0][:2]}{k}".rjust(7) for s, k in header)
                  + "mean".rjust(7) + "Δcons".rjust(7) + "time".rjust(7))
        if method == "consensus" and not overrides:
            reference = means
        gain = float(np.mean([means[c] - reference[c] for c in header]))
        label = method + (" " + " ".join(f"{k}={v}" for k, v in overrides.items()) if overrides else "")
        print(label[:48].ljust(48) + "".join(f"{means[c]:7.3f}" for c in header)
              + f"{np.mean(list(means.values())):7.3f}{gain:+7.3f}{time.perf_counter() - start:6.0f}s", flush=True)


if __name__ == "__main__":
    try:
        main()
    except PerserbenchError as exc:
        sys.exit(f"error: {exc}")
