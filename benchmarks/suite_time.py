"""Time the default suite's meta-training plus adaptation, and check it changed no number.

The default suite is every built-in competitor (consensus, calibrate, finetune, maml,
meta-perser, protonet) on every board task (the three heterogeneous generators and their
uniform controls): 36 runs, K = 1, 5, 10, 20, both scenarios, seed 0, each sealed exactly as
``perserbench run`` runs it. Issue 14 asks for it under 10 minutes on 2 CPU cores; README
reports the figure this script prints, with the machine and its load average.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/suite_time.py --jobs 2

Results go to a temporary folder (``--keep DIR`` to keep them). With ``--check`` (default:
``leaderboard/results``) every new result's per-episode records are compared with the
committed file of the same name: a speed-up that changed a single number fails here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from board_suite import COMPETITORS, HETEROGENEOUS, UNIFORM, Outcome, execute, plan

from perserbench.leaderboard.reproduce import compare_files, largest_difference
from perserbench.runner import cpu_model


def machine() -> str:
    return (f"{cpu_model()}, {len(os.sched_getaffinity(0))} CPU cores available ({os.cpu_count()} on the machine), "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def busy_cpu_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (``/proc/stat``): the
    difference over the suite is the CPU the suite used, its own processes and whatever else
    ran (so measure on a quiet machine). Per-process accounting cannot give this: isolation
    units are reaped by the kernel, so their CPU reaches no parent's ``RUSAGE_CHILDREN``."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def check(outcomes: list[Outcome], new_dir: Path, reference: Path) -> tuple[list[str], list[str]]:
    """New results whose episode records differ from (or are missing in) ``reference``: those
    that are not reproduced, and those that differ but were written on another kind of machine
    and agree within tolerance (``leaderboard reproduce``'s rule, :func:`compare_files`)."""
    bad, tolerated = [], []
    for outcome in outcomes:
        ref = reference / outcome.file
        if not ref.exists():
            bad.append(f"{outcome.file} (no committed file)")
            continue
        comparison = compare_files(json.loads(ref.read_text()), json.loads((new_dir / outcome.file).read_text()))
        if comparison.difference is None:
            continue
        count = f"{comparison.differing} of {comparison.records} records"
        if comparison.within_tolerance:
            largest = largest_difference(comparison.cells).test
            tolerated.append(f"{outcome.file} ({count}; largest cell difference {abs(largest.mean):.4f})")
        else:
            bad.append(f"{outcome.file} ({count}; {comparison.difference})")
    return bad, tolerated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2: one per core)")
    parser.add_argument("--tasks", default=",".join(HETEROGENEOUS + UNIFORM))
    parser.add_argument("--methods", default=",".join(COMPETITORS))
    parser.add_argument("--keep", type=Path, help="write the results here (default: a temporary folder)")
    parser.add_argument("--check", type=Path, default=Path("leaderboard/results"),
                        help="compare episode records with the results of the same name here")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    runs = plan(args.tasks.split(","), args.methods.split(","), references=False, controls=False)
    with tempfile.TemporaryDirectory(prefix="suite-time-") as tmp:
        out = args.keep or Path(tmp)
        if args.keep and any(args.keep.glob("*.json")):
            sys.exit(f"error: {args.keep} already holds results; timing needs an empty folder")
        print(f"machine: {machine()}", flush=True)
        load_before = os.getloadavg()
        busy_before = busy_cpu_seconds()
        start = time.perf_counter()
        outcomes = execute(runs, out, args.jobs, lambda o: print(
            f"  {o.run.task:32s} {o.run.method:12s} {o.seconds:6.1f}s", flush=True))
        wall = time.perf_counter() - start
        busy = busy_cpu_seconds() - busy_before
        load_after = os.getloadavg()
        print(f"suite: {len(outcomes)} runs in {wall:.0f}s wall ({wall / 60:.1f} min) with --jobs {args.jobs}; "
              f"sum of run times {sum(o.seconds for o in outcomes):.0f}s; load average (1/5/15 min) "
              f"before {'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in load_after)}; "
              f"machine CPU busy {busy:.0f} CPU-s ({busy / wall:.2f} of {len(os.sched_getaffinity(0))} cores)")
        if not args.no_check:
            bad, tolerated = check(outcomes, out, args.check)
            identical = len(outcomes) - len(bad) - len(tolerated)
            print(f"check against {args.check}: {identical} of {len(outcomes)} runs' episode records identical")
            if tolerated:
                print(f"  {len(tolerated)} written on another kind of machine differ, every cell within tolerance: "
                      + ", ".join(tolerated))
            if bad:
                print(f"  {len(bad)} not reproduced: {', '.join(bad)}")
                sys.exit(1)


if __name__ == "__main__":
    main()
