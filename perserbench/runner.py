"""The runner: task → folds × seeds → method.meta_fit → episodes → adapt → metrics → RunResult.

One path for every method, sealed (DESIGN §2). For each seed and listener fold the method is
meta-fitted once, in its own worker process, on that fold's :class:`MetaTrainSet`; each
(scenario, K) cell's episodes are then adapted and predicted in *isolation units*
(:mod:`perserbench.sealed`): unit ``e`` of a cell holds episode ``e`` of every test listener
of the fold, batched through ``adapt_many``, and is a fresh process that nothing survives.
Methods receive features and support labels only; the runner alone holds the query truth.

The **independence audit** re-adapts a deterministic sample of episodes (one per fold and
cell) alone in fresh units, forked first and in flight beside the cell's units, and compares
their predictions with the scored ones once the cell is scored. A method whose predictions
depend on anything but the episode's own support (other listeners' supports in the same call,
a memory outside the unit that grows as the cell's units run) fails the run with
:class:`AuditError`; nothing is written.

References (:class:`~perserbench.method.ReferenceMethod`, e.g. the synthetic oracle) take an
explicit privileged path in this process and are marked as references in the result.

Torch is re-seeded from (seed, fold[, cell, unit]) at each step, so a result depends only on
its inputs, not on the order or the subset of cells run.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import perserbench
from perserbench.episodes import (
    Episode,
    Items,
    MetaTrainSet,
    control_episode,
    episode_items,
    sample_episodes,
    split_hash,
)
from perserbench.errors import PerserbenchError
from perserbench.method import (
    Method,
    ReferenceContext,
    ReferenceMethod,
    config_dict,
    config_hash,
    is_reference,
)
from perserbench.metrics import class_counts, episode_metrics, listener_aggregates, summarize
from perserbench.plugins import MethodDescription, PluginRecipe, describe
from perserbench.registry import BUILTIN_PACKAGE, check_config, create_method
from perserbench.results import SCHEMA_VERSION, EpisodeRecord, RunResult, save_result
from perserbench.sealed import PendingUnit, Prediction, SealedMethod
from perserbench.tasks import SCENARIOS, ListenerFold, ResolvedTask

# Largest |Δp| between a scored prediction and the same episode re-adapted alone that counts
# as float noise (batched vs single vmap reductions differ by ~1e-7).
AUDIT_TOLERANCE = 1e-4
# Bounds on what isolation units hold at once (memory at corpus scale; no number depends on them
# for a fold of at most UNIT_LISTENERS test listeners, which is every task on the board).
UNIT_LISTENERS = 16
UNITS_IN_FLIGHT = 3

MethodSpec = str | type[Method] | Method
CONTROLS = ("own", "other-listener")

ProgressCallback = Callable[[str, int], None]  # (description, steps done now)


def _git_revision() -> str | None:
    """The commit of the perserbench checkout this code runs from, or None. An installed
    wheel lives in site-packages, which may sit inside some *other* repository (a venv in a
    user's project): its commit says nothing about this code, so it must be that checkout's
    top level that holds the package."""
    root = Path(perserbench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], check=False, capture_output=True,
                             text=True, timeout=5, cwd=root)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None
    return lines[1]


def _environment() -> dict[str, str]:
    """What a result's floats depend on besides the code and the seeds: library versions, and
    the CPU (its model and the vector instruction set torch dispatches to), because float
    kernels differ between CPU kinds and can move a probability that sits at a threshold."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "numpy": np.__version__, "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


class AuditError(PerserbenchError):
    """A method's predictions depend on more than the episode's own support (DESIGN §2)."""


@dataclass
class _Audit:
    episodes: int = 0
    max_abs_diff: float = 0.0

    def as_dict(self, ran: bool) -> dict[str, Any]:
        return {"ran": ran, "passed": ran, "episodes": self.episodes, "max_abs_diff": self.max_abs_diff,
                "tolerance": AUDIT_TOLERANCE}


def _instantiate(method: MethodSpec, description: MethodDescription | None, overrides: dict[str, str] | None,
                 seed: int) -> Method | PluginRecipe:
    """A fresh method object for one fold: from a registered name, a class, or (copied) an
    instance, so no state is shared between folds even in the caller's process. An installed
    plugin's name gives a :class:`~perserbench.plugins.PluginRecipe` instead: the plugin is
    imported in its fold workers only, never here beside the task."""
    if description is not None:
        if description.plugin:
            return PluginRecipe(description.name, tuple(sorted((overrides or {}).items())), seed,
                                description.config_hash)
        return create_method(description.name, overrides, seed=seed)
    if overrides:
        raise PerserbenchError("config overrides apply to registered method names; configure the object instead")
    if isinstance(method, type):
        if not issubclass(method, Method):
            raise PerserbenchError(f"{method.__name__} is not a perserbench Method subclass")
        model = method(seed=seed)
    elif isinstance(method, Method):
        model = type(method)(method.config, seed=seed)
    else:
        raise PerserbenchError(
            f"method must be a registered name, a Method class or instance, got {type(method).__name__}")
    check_config(method_label(model), model.config)
    return model


def method_label(method: MethodSpec) -> str:
    if isinstance(method, str):
        return method
    cls = method if isinstance(method, type) else type(method)
    return cls.name or cls.__name__


def _describe(method: MethodSpec, model: Method) -> MethodDescription:
    """The description of a method given as a class or an instance (the caller's own code)."""
    name = method_label(method)
    return MethodDescription(name, type(model).__module__, config_dict(model.config), config_hash(name, model.config),
                             is_reference(model), plugin=False)


def _check_reference(description: MethodDescription) -> None:
    if description.reference and (description.plugin or not description.module.startswith(BUILTIN_PACKAGE)):
        raise PerserbenchError(
            f"method {description.name!r} declares itself a reference ({description.module}); references "
            "receive privileged data, so only perserbench's built-in methods may be references"
        )


def run(
    method: MethodSpec,
    task: ResolvedTask,
    shots: Sequence[int],
    scenarios: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    config_overrides: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    control: str = "own",
) -> RunResult:
    """Run ``method`` (a registered name, a Method class or an instance) on ``task`` and
    return the complete :class:`RunResult`. Raises :class:`AuditError` when the method fails
    the independence audit. ``workers`` bounds the folds meta-fitted at once (default: the
    CPUs available); it changes speed only, never a number. ``control="other-listener"``
    runs the other-listener control (DESIGN §2): every episode adapts on a partner test
    listener's support (:func:`~perserbench.episodes.control_episode`) and is scored on its own
    listener's query; own-support score minus this is the personalization gain."""
    if control not in CONTROLS:
        raise PerserbenchError(f"unknown control {control!r}; choose one of {', '.join(CONTROLS)}")
    # An unknown name or a bad override fails before any work; a plugin is described by a probe.
    named = describe(method, config_overrides) if isinstance(method, str) else None
    description = named or _describe(method, _instantiate(method, None, config_overrides, 0))
    _check_reference(description)
    reference = description.reference
    if reference and control != "own":
        raise PerserbenchError(f"{description.name!r} is a reference; the {control} control applies to methods only")
    scenarios = tuple(scenarios or task.spec.episodes.scenarios)
    shots, seeds = tuple(sorted(set(shots))), tuple(seeds)
    bad_seeds = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if bad_seeds or not seeds:
        raise PerserbenchError(f"seeds must be non-negative integers, got {list(seeds)}")
    check_request(task, shots, scenarios)
    name = method_label(method)
    parallel = max(1, workers or len(os.sched_getaffinity(0)))
    started = time.perf_counter()
    records: list[EpisodeRecord] = []
    audit = _Audit()
    for seed in seeds:
        models = [_instantiate(method, named, config_overrides, _derived_seed(seed, fold.index))
                  for fold in task.folds]
        if reference:
            for fold, model in zip(task.folds, models):
                torch.manual_seed(_derived_seed(seed, fold.index))
                model.meta_fit(MetaTrainSet(task, fold))
                records.extend(_reference_fold(model, task, fold, scenarios, shots, seed, progress))
            continue
        with ExitStack() as stack:
            # Fold workers meta-fit in parallel, ``parallel`` folds ahead of the one being scored.
            hosts: dict[int, SealedMethod] = {}
            for i, fold in enumerate(task.folds):
                for j in range(i, min(i + parallel, len(task.folds))):
                    if j not in hosts:
                        other = task.folds[j]
                        hosts[j] = stack.enter_context(
                            SealedMethod(models[j], MetaTrainSet(task, other), _derived_seed(seed, other.index)))
                if progress:
                    progress(f"seed {seed} fold {fold.index}: meta-fit {name}", 0)
                sealed = hosts.pop(i)
                sealed.wait_ready()
                if progress:
                    progress(f"seed {seed} fold {fold.index}: adapt", 1)
                for scenario in scenarios:
                    for k in shots:
                        records.extend(_sealed_cell(sealed, name, task, fold, scenario, k, seed, audit, control))
                        if progress:
                            progress(f"seed {seed} fold {fold.index}: {scenario} K={k}", 1)
                sealed.close()
    return RunResult(
        schema_version=SCHEMA_VERSION,
        perserbench_version=perserbench.__version__,
        git_revision=_git_revision(),
        task={"name": task.spec.name, "version": task.spec.version, "hash": split_hash(task)},
        method={"name": name, "config": description.config, "config_hash": description.config_hash,
                "reference": reference, "control": control},
        seeds=list(seeds),
        scenarios=list(scenarios),
        shots=list(shots),
        episodes=records,
        listeners=listener_aggregates(records),
        summary=summarize(records),
        wall_time_s=round(time.perf_counter() - started, 3),
        audit=audit.as_dict(ran=not reference),
        environment=_environment(),
    )


def _record(fold: ListenerFold, ep: Episode, seed: int, n_support: int, truth: np.ndarray,
            prediction: Prediction) -> EpisodeRecord:
    scores = episode_metrics(prediction.proba, truth, prediction.thresholds)
    counts = class_counts(prediction.proba, truth, prediction.thresholds)
    return EpisodeRecord(fold.index, ep.listener, ep.scenario, ep.shots, ep.index, seed, n_support, len(truth),
                         **scores, **counts)


def isolation_units(episodes: Sequence[Episode], max_listeners: int = UNIT_LISTENERS) -> list[list[Episode]]:
    """Group a cell's episodes into units holding at most one episode per listener: unit
    ``e`` = episode ``e`` of every listener (so each unit still batches across listeners),
    split into units of at most ``max_listeners`` listeners in listener order. Why the split:
    a unit's supports and queries travel as float32 ``[L, D]`` rows, so a fold with hundreds of
    test listeners of a 25 × 1024 upstream would put gigabytes in one process; a fold of at
    most ``max_listeners`` (every task on the board) is one unit per episode index, as before."""
    units: dict[int, list[Episode]] = {}
    for ep in episodes:
        units.setdefault(ep.index, []).append(ep)
    out = [units[e][i:i + max_listeners] for e in sorted(units) for i in range(0, len(units[e]), max_listeners)]
    for unit in out:
        listeners = [ep.listener for ep in unit]
        if len(set(listeners)) != len(listeners):
            raise PerserbenchError("internal: an isolation unit holds two episodes of one listener")
    return out


def _sealed_cell(sealed: SealedMethod, name: str, task: ResolvedTask, fold: ListenerFold, scenario: str, k: int,
                 seed: int, audit: _Audit, control: str) -> list[EpisodeRecord]:
    episodes = sample_episodes(task, fold, scenario, k)
    if not episodes:
        return []
    if control == "other-listener":
        episodes = [control_episode(task, fold, ep) for ep in episodes]
    cell_seed = (seed, fold.index, SCENARIOS.index(scenario), k)
    # Every unit of the cell, and the audit's lone episode, in flight at once: each is its own
    # process, so they run in parallel and the fork latency is hidden.
    units = isolation_units(episodes)
    audited, shown = audit_sample(task, episodes, cell_seed)
    support, query, _ = episode_items(task, audited)
    audit_pending = sealed.submit([support], [Items(query.x[shown])], _derived_seed(*cell_seed, audited.index),
                                  stage="audit")
    scored: dict[tuple, Prediction] = {}
    out = []
    # At most UNITS_IN_FLIGHT units hold their episodes at once (here and in their processes),
    # which bounds memory at any corpus size; which are in flight changes no number.
    in_flight: deque[tuple[list[Episode], list, PendingUnit]] = deque()

    def collect_oldest() -> None:
        unit, its, ticket = in_flight.popleft()
        for ep, (support, _, truth), prediction in zip(unit, its, sealed.collect(ticket), strict=True):
            scored[ep.key] = prediction
            out.append(_record(fold, ep, seed, len(support), truth, prediction))

    for unit in units:
        if len(in_flight) >= UNITS_IN_FLIGHT:
            collect_oldest()
        its = [episode_items(task, ep) for ep in unit]
        ticket = sealed.submit([s for s, _, _ in its], [q for _, q, _ in its], _derived_seed(*cell_seed, unit[0].index))
        in_flight.append((unit, its, ticket))
    while in_flight:
        collect_oldest()
    _check_audit(name, audited, sealed.collect(audit_pending)[0], scored[audited.key], shown, audit)
    return out


def audit_sample(task: ResolvedTask, episodes: Sequence[Episode],
                 cell_seed: Sequence[int]) -> tuple[Episode, np.ndarray]:
    """The cell's audited episode and the positions of its query the lone re-adaptation is
    shown (a random half, at least one item): a deterministic draw from (seed, fold, scenario,
    K) *and the query labels of every episode of the cell*.

    Why half the query: a prediction, or a threshold, computed from the rest of the query (the
    listener's unlabelled statistics) changes when the rest changes, and the runner, not code
    in the method's own process, decides what the audit shows. Why the labels in the seed: a
    unit's torch seed tells a method which (seed, fold, scenario, K, episode index) it is
    adapting, so a draw from those alone could be recomputed inside the unit, and a method
    could pool or peek wherever it knows it is not audited. No method ever sees the query
    labels, so the draw stays reproducible for the runner and unpredictable for the method."""
    labels = task.corpus.annotations.labels
    secret = hashlib.sha256(b"".join(np.ascontiguousarray(labels[ep.query]).tobytes() for ep in episodes))
    rng = np.random.default_rng([*cell_seed, 0xA0D17, int.from_bytes(secret.digest()[:8], "little")])
    episode = episodes[int(rng.integers(len(episodes)))]
    n = len(episode.query)
    return episode, np.sort(rng.permutation(n)[: max(1, n // 2)])


def _check_audit(name: str, ep: Episode, alone: Prediction, before: Prediction, shown: np.ndarray,
                 audit: _Audit) -> None:
    """Compare the audited episode adapted alone, on the ``shown`` positions of its query, with
    its scored prediction of those items."""
    scored = before.proba[shown]
    diff = float(np.abs(alone.proba.astype(np.float64) - scored).max()) if alone.proba.shape == \
        scored.shape else float("inf")
    if (alone.thresholds is None) != (before.thresholds is None):
        diff = float("inf")
    elif alone.thresholds is not None:
        diff = max(diff, float(np.abs(np.asarray(alone.thresholds) - np.asarray(before.thresholds)).max()))
    audit.episodes += 1
    audit.max_abs_diff = max(audit.max_abs_diff, diff)
    if not diff <= AUDIT_TOLERANCE:
        fold, listener, scenario, k, index = ep.key
        raise AuditError(
            f"method {name!r} failed the independence audit: episode {index} of listener {listener!r} (fold {fold}, "
            f"{scenario}, K={k}) predicts differently when adapted alone and shown half of its query "
            f"(max |Δp| = {diff:.3g} > {AUDIT_TOLERANCE:g}); a prediction may depend only on the meta-fitted state, "
            "its own episode's support and the item itself (DESIGN §2), so this run is refused and nothing was "
            "written"
        )


def _reference_fold(model: ReferenceMethod, task: ResolvedTask, fold: ListenerFold, scenarios: Sequence[str],
                    shots: Sequence[int], seed: int, progress: ProgressCallback | None) -> list[EpisodeRecord]:
    """The privileged path: a reference sees the whole task, episode by episode."""
    if progress:
        progress(f"seed {seed} fold {fold.index}: reference", 1)
    out = []
    for scenario in scenarios:
        for k in shots:
            for ep in sample_episodes(task, fold, scenario, k):
                support, query, truth = episode_items(task, ep)
                proba, thresholds = model.predict_reference(ReferenceContext(task, fold, ep, support, query))
                prediction = Prediction(np.asarray(proba, dtype=np.float32),
                                        None if thresholds is None else np.asarray(thresholds, dtype=np.float64))
                out.append(_record(fold, ep, seed, len(support), truth, prediction))
            if progress:
                progress(f"seed {seed} fold {fold.index}: {scenario} K={k}", 1)
    return out


def result_filename(result: RunResult) -> str:
    """Canonical file name: one file per (method, config, task version, scenarios, shots,
    seeds). The split hash is in the name, so a run of an edited task never overwrites the
    result of the task it was before."""
    scen = "both" if set(result.scenarios) == set(SCENARIOS) else "-".join(result.scenarios)
    return (f"{result.method_name}__{result.task_name}__{scen}__k{'-'.join(map(str, result.shots))}"
            f"__s{'-'.join(map(str, result.seeds))}__{result.method['config_hash'][:8]}"
            f"__t{str(result.task['hash'])[:8]}{control_suffix(result.method.get('control', 'own'))}.json")


def planned_filename(method: str, config_key: str, task: ResolvedTask, seeds: Sequence[int],
                     scenarios: Sequence[str], shots: Sequence[int], control: str = "own") -> str:
    """The file name a run of ``method`` whose config hashes to ``config_key``
    (:attr:`~perserbench.plugins.MethodDescription.config_hash`) will write (:func:`result_filename`),
    known before running: what lets a sweep or a board regeneration skip finished runs, and
    only those (a file of another config, such as an older default, or of an edited task is
    not this run's)."""
    stub = RunResult(SCHEMA_VERSION, "", None, {"name": task.spec.name, "hash": split_hash(task)},
                     {"name": method, "config_hash": config_key, "control": control},
                     list(seeds), list(scenarios), sorted(set(shots)), [], [], [], 0.0, {})
    return result_filename(stub)


def control_suffix(control: str) -> str:
    return "" if control == "own" else "__ctl-other"


def write_result(result: RunResult, out_dir: Path) -> Path:
    return save_result(result, Path(out_dir) / result_filename(result))

