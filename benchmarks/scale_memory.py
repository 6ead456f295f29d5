"""Wall time and peak memory of a full ``perserbench run`` at 1x, 4x and 16x of a base size.

Not a test (it takes minutes to hours): a measurement for README's "Scale" section. 16x is the
bundled ``synthetic-msp-scale`` task (160,000 utterances, 2,000 zipf-workload listeners,
25 x 1024 float16 features); 1x and 4x are the same task with 10,000 and 40,000 utterances.

Each (size, method) is one ``perserbench run`` subprocess. Memory is sampled every 0.2 s over
the whole process tree (the runner, the forkserver, the sealed fold workers and their unit
processes): the peak of the summed RSS, and the peak of the summed PSS (proportional set size:
pages shared between forked processes, or with the page cache's memory map, counted once,
shared out), from ``/proc``. The features are generated into the feature cache on first use (the first row of
each size includes that; ``--prepare`` generates them first, untimed).

    OMP_NUM_THREADS=1 python benchmarks/scale_memory.py --sizes 1 4 16 --methods consensus,finetune
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

BUILTINS = ("consensus", "finetune", "protonet", "maml", "meta-perser", "calibrate")
FULL = 160_000  # the scale task's utterances = 16x
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    size: int
    utterances: int
    method: str
    wall_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    code: int


def task_file(factor: int, folder: Path) -> Path:
    """The scale task with ``FULL * factor / 16`` utterances, written as a task file."""
    spec = tomllib.loads((ROOT / "perserbench" / "tasks" / "synthetic-msp-scale.toml").read_text())
    options = dict(spec["corpus"]["options"], utterances=FULL * factor // 16)
    lines = [f'name = "synthetic-msp-scale-{factor}x"', f'version = "{spec["version"]}"', 'purpose = "scale"',
             "[corpus]", 'name = "synthetic"', 'features = "synthetic"',
             "labels = [" + ", ".join(f'"{x}"' for x in spec["corpus"]["labels"]) + "]",
             "options = { " + ", ".join(f"{k} = {_toml(v)}" for k, v in options.items()) + " }"]
    for table in ("listeners", "utterances", "episodes", "consensus"):
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml(v)}" for k, v in spec[table].items()]
    path = folder / f"synthetic-msp-scale-{factor}x.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB (0, 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run ``cmd``; (wall s, peak summed RSS MB, peak summed PSS MB, exit code). The forkserver
    is a child of the runner, so the tree from the runner covers every process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = pss = 0
            for pid in _tree(proc.pid):
                r, p = _memory_kb(pid)
                rss, pss = rss + r, pss + p
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            done.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        sys.stderr.write(err[-2000:])
    return time.perf_counter() - started, peak[0] / 1024, peak[1] / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16], help="multiples of the base (1/16)")
    parser.add_argument("--methods", default=",".join(BUILTINS))
    parser.add_argument("--prepare", action="store_true", help="generate each size's features first (untimed)")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    exe = [sys.executable, "-m", "perserbench"]
    print(f"load average at start: {os.getloadavg()}; cpus: {os.cpu_count()}", flush=True)
    print("size  utterances  method        wall_s   peak_rss_MB  peak_pss_MB  exit", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tasks = {factor: task_file(factor, folder) for factor in args.sizes}
        if args.prepare:
            prepare = "import sys; from perserbench.tasks import load_task; load_task(sys.argv[1])"
            for task in tasks.values():
                subprocess.run([sys.executable, "-c", prepare, str(task)], env=env, check=True)
        for method in args.methods.split(","):  # every size of a method in a row: its growth first
            for factor, task in tasks.items():
                wall, rss, pss, code = measure([*exe, "run", "--task", str(task), "--method", method, "--seed", "0",
                                                "-o", str(folder / "runs")], env)
                row = Row(factor, FULL * factor // 16, method, wall, rss, pss, code)
                print(f"{row.size:>3}x  {row.utterances:>10}  {row.method:<12} {row.wall_s:>7.1f}  "
                      f"{row.peak_rss_mb:>11.0f}  {row.peak_pss_mb:>11.0f}  {row.code}", flush=True)
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
