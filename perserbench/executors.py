"""Sweeps: a grid of (method, task, seed) jobs run sequentially, in a local process pool or on
a Ray cluster, resumable because every job's result file has a canonical name and a finished
file (written atomically) is never redone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from perserbench.episodes import split_hash
from perserbench.errors import PerserbenchError

EXECUTORS = ("sequential", "process", "ray")


@dataclass(frozen=True)
class SweepJob:
    """One result file's worth of work: a method on a task for one seed, all requested cells."""

    method: str
    task: str
    seed: int
    shots: tuple[int, ...]
    scenarios: tuple[str, ...]
    out_dir: str
    config: tuple[tuple[str, str], ...] = ()
    corpus_options: tuple[tuple[str, Any], ...] = field(default=())

    def label(self) -> str:
        return f"{self.method} on {self.task} (seed {self.seed})"


@lru_cache(maxsize=8)
def _resolved(task: str, corpus_options: tuple[tuple[str, Any], ...]):
    from perserbench.tasks import load_task

    return load_task(task, dict(corpus_options))


def expected_path(job: SweepJob) -> Path:
    """The file the job will write; known before running, which is what makes resuming cheap."""
    from perserbench.plugins import describe
    from perserbench.runner import planned_filename

    config_key = describe(job.method, dict(job.config)).config_hash
    task = _resolved(job.task, job.corpus_options)
    return Path(job.out_dir) / planned_filename(job.method, config_key, task, [job.seed], job.scenarios, job.shots)


def is_done(job: SweepJob) -> bool:
    """Finished = the result file exists, parses, and was made on the task's current splits."""
    from perserbench.results import load_result

    path = expected_path(job)
    if not path.exists():
        return False
    try:
        result = load_result(path)
    except PerserbenchError:
        return False
    return result.task.get("hash") == split_hash(_resolved(job.task, job.corpus_options))


def run_job(job: SweepJob) -> str:
    """Run one job and write its result; importable by worker processes and Ray."""
    from perserbench.runner import run, write_result

    task = _resolved(job.task, job.corpus_options)
    result = run(job.method, task, job.shots, job.scenarios, [job.seed], dict(job.config))
    return str(write_result(result, Path(job.out_dir)))


def plan(methods: Sequence[str], tasks: Sequence[str], seeds: Sequence[int], shots: Sequence[int] | None,
         scenarios: Sequence[str] | None, out_dir: Path, config: dict[str, str] | None = None,
         corpus_options: dict[str, Any] | None = None) -> list[SweepJob]:
    from perserbench.plugins import describe

    for m in methods:
        describe(m, config)
    jobs = []
    opts = tuple(sorted((corpus_options or {}).items()))
    for task, method, seed in itertools.product(tasks, methods, seeds):
        spec = _resolved(task, opts).spec
        jobs.append(SweepJob(method, task, seed, tuple(shots or spec.episodes.shots),
                             tuple(scenarios or spec.episodes.scenarios), str(out_dir),
                             tuple(sorted((config or {}).items())), opts))
    return jobs


def execute(jobs: Sequence[SweepJob], executor: str = "sequential", workers: int = 2,
            address: str | None = None, on_done: Callable[[SweepJob, str], None] | None = None) -> list[str]:
    """Run ``jobs`` (already filtered to unfinished ones) and return the written paths."""
    if executor not in EXECUTORS:
        raise PerserbenchError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    done: list[str] = []

    def finish(job: SweepJob, path: str) -> None:
        done.append(path)
        if on_done:
            on_done(job, path)

    if executor == "sequential":
        for job in jobs:
            finish(job, run_job(job))
    elif executor == "process":
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_job, job): job for job in jobs}
            for fut in as_completed(futures):
                finish(futures[fut], fut.result())
    else:
        _execute_ray(jobs, address, finish)
    return done


RAY_RETRIES = 2  # a job whose worker dies is rerun this often by Ray before the sweep gives up on it


def _execute_ray(jobs: Sequence[SweepJob], address: str | None, finish: Callable[[SweepJob, str], None]) -> None:
    """One Ray task per job. A job whose worker process dies is retried by Ray
    (``RAY_RETRIES``); one that still fails does not stop the others: every other job runs
    to the end and writes its file, then the sweep raises, and the same command again runs
    only what is missing (finished files are never redone)."""
    from perserbench.raycluster import connect, task_failure

    ray = connect(address)
    remote = ray.remote(max_retries=RAY_RETRIES)(run_job)  # the module attribute at call time
    pending = {remote.remote(job): job for job in jobs}
    failed: list[tuple[SweepJob, str]] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            job = pending.pop(ref)
            try:
                path = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - Ray wraps every task failure; sorted out below
                failed.append((job, task_failure(exc)))
                continue
            finish(job, path)
    if failed:
        job, why = failed[0]
        raise PerserbenchError(f"{len(failed)} of {len(jobs)} sweep jobs failed on Ray (first: {job.label()}: {why}); "
                               "the other jobs' results are written: run the same command again to run only the "
                               "missing ones")
