"""The runner: task → folds × seeds → method.meta_fit → episodes → adapt → metrics → RunResult.

One path for every method. For each seed and listener fold the method is meta-fitted once on
that fold's :class:`MetaTrainSet`, then adapted on every episode of the fold's test listeners
(batched through ``adapt_many``) for each requested (scenario, K) cell. Torch is re-seeded
from (seed, fold[, cell]) at each step, so a result depends only on its inputs, not on the
order or the subset of cells run.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

import perserbench
from perserbench.episodes import MetaTrainSet, episode_items, sample_episodes
from perserbench.errors import PerserbenchError
from perserbench.method import config_dict, config_hash
from perserbench.metrics import episode_metrics, listener_aggregates, summarize
from perserbench.registry import create_method
from perserbench.results import SCHEMA_VERSION, EpisodeRecord, RunResult, save_result
from perserbench.tasks import SCENARIOS, ResolvedTask

ProgressCallback = Callable[[str, int], None]  # (description, steps done now)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5,
                             cwd=Path(perserbench.__file__).resolve().parent.parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _environment() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "numpy": np.__version__}


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def check_request(task: ResolvedTask, shots: Sequence[int], scenarios: Sequence[str]) -> None:
    for s in scenarios:
        if s not in SCENARIOS or s not in task.spec.episodes.scenarios:
            raise PerserbenchError(
                f"unknown scenario {s!r} for task {task.spec.name!r}; choose from "
                f"{', '.join(task.spec.episodes.scenarios)} (or 'both')"
            )
    for k in shots:
        if k not in task.spec.episodes.shots:
            raise PerserbenchError(
                f"K={k} is not a shot count of task {task.spec.name!r} (shots: "
                f"{', '.join(map(str, task.spec.episodes.shots))}); fixed shot counts keep results comparable"
            )


def total_steps(task: ResolvedTask, shots: Sequence[int], scenarios: Sequence[str], seeds: Sequence[int]) -> int:
    """Progress units: one per meta-fit and one per (scenario, K) cell, per fold and seed."""
    return len(seeds) * len(task.folds) * (1 + len(shots) * len(scenarios))


def run(
    method: str,
    task: ResolvedTask,
    shots: Sequence[int],
    scenarios: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    config_overrides: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Run ``method`` on ``task`` and return the complete :class:`RunResult`."""
    scenarios = tuple(scenarios or task.spec.episodes.scenarios)
    shots, seeds = tuple(sorted(set(shots))), tuple(seeds)
    check_request(task, shots, scenarios)
    started = time.perf_counter()
    records: list[EpisodeRecord] = []
    config = None
    for seed in seeds:
        for fold in task.folds:
            if progress:
                progress(f"seed {seed} fold {fold.index}: meta-fit {method}", 0)
            torch.manual_seed(_derived_seed(seed, fold.index))
            model = create_method(method, config_overrides, seed=_derived_seed(seed, fold.index))
            config = model.config
            model.meta_fit(MetaTrainSet(task, fold))
            if progress:
                progress(f"seed {seed} fold {fold.index}: adapt", 1)
            for scenario in scenarios:
                for k in shots:
                    torch.manual_seed(_derived_seed(seed, fold.index, SCENARIOS.index(scenario), k))
                    records.extend(_evaluate_cell(model, task, fold, scenario, k, seed))
                    if progress:
                        progress(f"seed {seed} fold {fold.index}: {scenario} K={k}", 1)
    return RunResult(
        schema_version=SCHEMA_VERSION,
        perserbench_version=perserbench.__version__,
        git_revision=_git_revision(),
        task={"name": task.spec.name, "version": task.spec.version, "hash": task.hash},
        method={"name": method, "config": config_dict(config), "config_hash": config_hash(method, config)},
        seeds=list(seeds),
        scenarios=list(scenarios),
        shots=list(shots),
        episodes=records,
        listeners=listener_aggregates(records),
        summary=summarize(records),
        wall_time_s=round(time.perf_counter() - started, 3),
        environment=_environment(),
    )


def _evaluate_cell(model, task, fold, scenario, k, seed) -> list[EpisodeRecord]:
    episodes = sample_episodes(task, fold, scenario, k)
    if not episodes:
        return []
    items = [episode_items(task, ep) for ep in episodes]
    predictors = model.adapt_many([support for support, _, _ in items])
    out = []
    for ep, (support, query, truth), predictor in zip(episodes, items, predictors):
        with torch.no_grad():
            proba = predictor.predict_proba(query).detach().cpu().numpy()
        scores = episode_metrics(proba, truth, getattr(predictor, "thresholds", None))
        out.append(EpisodeRecord(fold.index, ep.listener, scenario, k, ep.index, seed,
                                 len(support), len(query), **scores))
    return out


def result_filename(result: RunResult) -> str:
    """Canonical file name: one file per (method, config, task, scenarios, shots, seeds)."""
    scen = "both" if set(result.scenarios) == set(SCENARIOS) else "-".join(result.scenarios)
    return (f"{result.method_name}__{result.task_name}__{scen}__k{'-'.join(map(str, result.shots))}"
            f"__s{'-'.join(map(str, result.seeds))}__{result.method['config_hash'][:8]}.json")


def write_result(result: RunResult, out_dir: Path) -> Path:
    return save_result(result, Path(out_dir) / result_filename(result))

