"""Validation of one result file against its task and against itself (DESIGN §5).

A result is shown on the board only if

* its schema version is current (:func:`perserbench.results.load_result`);
* its task hash equals the hash of the task spec resolved now, so a number is only shown next
  to others measured on identical splits;
* every required episode — each (fold, listener, scenario, K, episode) of the task for the
  result's scenarios and shots, times each seed — is present exactly once, with the support
  and query sizes the task prescribes;
* the per-listener aggregates and the summary (including its hierarchical-bootstrap CI, which
  is deterministic with seed 0) recompute from the per-episode metrics to within 1e-9, and
  the method's config hash recomputes from its config;
* its role is coherent and, unless it is a reference, it records a passed independence audit
  (:mod:`perserbench.leaderboard.plausibility`).

Checks that need several files (two files for one cell, results above the ceiling) are made
where the files meet: :mod:`perserbench.leaderboard.board` and ``publish``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perserbench.errors import PerserbenchError
from perserbench.leaderboard.plausibility import check_audit, check_reference_flag
from perserbench.results import EPISODE_METRICS, RunResult, load_result
from perserbench.roles import role_of

TOLERANCE = 1e-9
EpisodeKey = tuple[int, str, str, int, int]  # (fold, listener, scenario, K, episode)


@dataclass(frozen=True)
class TaskInfo:
    """What validation needs from a resolved task: identity and the required episodes with
    their (support, query) sizes. Kept instead of the resolved task to free the corpus."""

    name: str
    version: str
    hash: str
    scenarios: tuple[str, ...]
    shots: tuple[int, ...]
    required: dict[EpisodeKey, tuple[int, int]]
    development: bool = False
    uniform: bool = False  # a uniform control (corpus option uniform = true): no personalization can help
    replicate_of: str | None = None  # the board task this one is another corpus draw of (TaskSpec.replicate_of)


class TaskResolver:
    """Resolves ``<tasks_dir>/<name>.toml`` once per task name (resolving a task and hashing
    its episodes takes seconds on the synthetic corpus; a board holds many results per task)."""

    def __init__(self, tasks_dir: Path | None = None, corpus_options: dict[str, Any] | None = None) -> None:
        from perserbench.tasks import tasks_dir as default_tasks_dir

        self.tasks_dir = Path(tasks_dir) if tasks_dir is not None else default_tasks_dir()
        self.corpus_options = corpus_options
        self._cache: dict[str, TaskInfo] = {}

    def get(self, name: str, source: str) -> TaskInfo:
        if name not in self._cache:
            self._cache[name] = self._resolve(name, source)
        return self._cache[name]

    def _resolve(self, name: str, source: str) -> TaskInfo:
        from perserbench.episodes import all_episodes, split_hash
        from perserbench.tasks import load_task, load_task_spec

        path = self.tasks_dir / f"{name}.toml"
        if not path.is_file():
            raise PerserbenchError(
                f"{source}: task {name!r} has no spec {path}; only results of tasks in {self.tasks_dir} "
                "can be validated"
            )
        try:
            spec = load_task_spec(path)
            if not spec.ranked:  # refused before resolving: a scale task's corpus is gigabytes
                return TaskInfo(spec.name, spec.version, "", tuple(spec.episodes.scenarios),
                                tuple(spec.episodes.shots), {}, development=True)
            task = load_task(path, self.corpus_options)
            required = {ep.key: (len(ep.support), len(ep.query)) for ep in all_episodes(task)}
            task_hash = split_hash(task)
        except PerserbenchError as exc:
            raise PerserbenchError(f"{source}: task {name!r} cannot be resolved: {exc}") from None
        spec = task.spec
        uniform = {**spec.corpus.options, **(self.corpus_options or {})}.get("uniform", False)
        return TaskInfo(spec.name, spec.version, task_hash, tuple(spec.episodes.scenarios),
                        tuple(spec.episodes.shots), required, not spec.ranked,
                        uniform is True or str(uniform).lower() == "true", spec.replicate_of)


def validate_result(path: Path, resolver: TaskResolver) -> RunResult:
    """Load ``path`` and check it against its task and against itself; the first problem is
    raised as a one-line :class:`PerserbenchError` naming the file and the reason."""
    result = load_result(path)
    src = str(path)
    for key in ("name", "version", "hash"):
        if not isinstance(result.task.get(key), str):
            raise PerserbenchError(f"{src}: task.{key} is missing or not a string")
    role_of(result, src)
    check_reference_flag(result, src)
    check_audit(result, src)
    info = resolver.get(result.task_name, src)
    if info.development:
        raise PerserbenchError(
            f"{src}: task {info.name!r} is a development or scale task (defaults are tuned on it, or it "
            "measures time and memory); it is never on the board — run the method on a benchmark task"
        )
    if result.task["hash"] != info.hash:
        version_note = (f"task version {result.task['version']} in the file, {info.version} in "
                        f"{resolver.tasks_dir}" if result.task["version"] != info.version else
                        "same task version, so the splits or episodes differ")
        raise PerserbenchError(
            f"{src}: task hash {result.task['hash']} does not match task {info.name!r} resolved now "
            f"({info.hash}; {version_note}); re-run the method on the current task"
        )
    _check_cells(result, info, src)
    _check_episodes(result, info, src)
    _check_derived(result, src)
    _check_config_hash(result, src)
    return result


def _check_cells(result: RunResult, info: TaskInfo, src: str) -> None:
    if not result.scenarios or not result.shots or not result.seeds:
        raise PerserbenchError(f"{src}: scenarios, shots and seeds must all be non-empty")
    for what, values, allowed in (("scenario", result.scenarios, info.scenarios), ("K", result.shots, info.shots)):
        if len(set(values)) != len(values):
            raise PerserbenchError(f"{src}: {what} values are repeated in {values}")
        bad = [v for v in values if v not in allowed]
        if bad:
            raise PerserbenchError(f"{src}: {what} {bad[0]!r} is not part of task {info.name!r} ({list(allowed)})")
    if len(set(result.seeds)) != len(result.seeds):
        raise PerserbenchError(f"{src}: seeds are repeated in {result.seeds}")


def _check_episodes(result: RunResult, info: TaskInfo, src: str) -> None:
    """Every required (fold, listener, scenario, K, episode, seed) exactly once, nothing else."""
    scenarios, shots = set(result.scenarios), set(result.shots)
    required = {key: sizes for key, sizes in info.required.items() if key[2] in scenarios and key[3] in shots}
    counts = Counter((r.fold, r.listener, r.scenario, r.shots, r.episode, r.seed) for r in result.episodes)
    duplicated = sorted(k for k, n in counts.items() if n > 1)
    if duplicated:
        raise PerserbenchError(f"{src}: {len(duplicated)} episode record(s) appear more than once, "
                               f"e.g. {_describe(duplicated[0])}")
    expected = {key + (seed,) for key in required for seed in result.seeds}
    unexpected = sorted(set(counts) - expected)
    if unexpected:
        raise PerserbenchError(f"{src}: {len(unexpected)} episode record(s) are not episodes of task "
                               f"{info.name!r}, e.g. {_describe(unexpected[0])}")
    missing = sorted(expected - set(counts))
    if missing:
        listeners = sorted({k[1] for k in missing})
        raise PerserbenchError(
            f"{src}: {len(missing)} required episode record(s) are missing (listener(s) "
            f"{', '.join(listeners[:5])}{', …' if len(listeners) > 5 else ''}), e.g. {_describe(missing[0])}"
        )
    for rec in result.episodes:
        key = (rec.fold, rec.listener, rec.scenario, rec.shots, rec.episode)
        if (rec.n_support, rec.n_query) != required[key]:
            raise PerserbenchError(
                f"{src}: {_describe(key + (rec.seed,))} has {rec.n_support} support / {rec.n_query} query "
                f"items; the task prescribes {required[key][0]} / {required[key][1]}"
            )
        for metric in EPISODE_METRICS:
            value = getattr(rec, metric)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise PerserbenchError(f"{src}: {_describe(key + (rec.seed,))} has {metric} = {value!r}, "
                                       "not a number in [0, 1]")
    _check_counts(result, src)


def _check_counts(result: RunResult, src: str) -> None:
    """Per-class counts: one non-negative integer per class (the same classes in every record),
    at most the query size per class, and the episode's macro- and micro-F1 must recompute
    from them (so the pooled metric and the per-episode metric describe the same predictions)."""
    from perserbench.metrics import f1_from_counts

    n_classes = None
    for rec in result.episodes:
        where = _describe((rec.fold, rec.listener, rec.scenario, rec.shots, rec.episode, rec.seed))
        counts = (rec.tp, rec.fp, rec.fn)
        if not all(isinstance(c, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in c)
                   for c in counts):
            raise PerserbenchError(f"{src}: {where} has per-class counts that are not lists of non-negative integers")
        n_classes = len(rec.tp) if n_classes is None else n_classes
        if not n_classes or any(len(c) != n_classes for c in counts):
            raise PerserbenchError(f"{src}: {where} has per-class counts of lengths {[len(c) for c in counts]}; "
                                   f"expected {n_classes} classes in every record")
        tp, fp, fn = counts
        if any(t + f > rec.n_query for t, f in zip(tp, fp)) or any(t + f > rec.n_query for t, f in zip(tp, fn)):
            raise PerserbenchError(f"{src}: {where} counts more predictions or truths of a class than its "
                                   f"{rec.n_query} query items")
        macro, micro = f1_from_counts(tp, fp, fn)
        for metric, value in (("macro_f1", macro), ("micro_f1", micro)):
            if abs(getattr(rec, metric) - value) > TOLERANCE:
                raise PerserbenchError(f"{src}: {where} has {metric} = {getattr(rec, metric)!r}, but its per-class "
                                       f"counts give {value!r}")


def _describe(key: tuple) -> str:
    fold, listener, scenario, shots, episode, seed = key
    return f"fold {fold} listener {listener} {scenario} K={shots} episode {episode} seed {seed}"


def _check_derived(result: RunResult, src: str) -> None:
    """Listener and summary records must be what the metrics module computes from the episodes."""
    from perserbench.metrics import listener_aggregates, summarize

    for what, stored, recomputed in (("listener", result.listeners, listener_aggregates(result.episodes)),
                                     ("summary", result.summary, summarize(result.episodes))):
        problem = _first_mismatch(stored, recomputed)
        if problem:
            raise PerserbenchError(f"{src}: {what} records do not recompute from the episode metrics ({problem})")


_IDENTITY_FIELDS = ("listener", "scenario", "shots", "metric")


def _first_mismatch(stored: Sequence[Any], recomputed: Sequence[Any]) -> str | None:
    if len(stored) != len(recomputed):
        return f"{len(stored)} records in the file, {len(recomputed)} recomputed"
    for mine, theirs in zip(stored, recomputed):
        for f in dataclasses.fields(theirs):
            a, b = getattr(mine, f.name), getattr(theirs, f.name)
            if isinstance(b, float) and not isinstance(a, bool) and isinstance(a, (int, float)):
                same = math.isfinite(a) and abs(a - b) <= TOLERANCE
            else:
                same = a == b
            if not same:
                ident = " ".join(f"{g.name}={getattr(theirs, g.name)}" for g in dataclasses.fields(theirs)
                                 if g.name in _IDENTITY_FIELDS)
                return f"{ident}: {f.name} is {a!r} in the file, recomputed {b!r}"
    return None


def _check_config_hash(result: RunResult, src: str) -> None:
    """The method's config_hash must be the hash of the config it reports (so a file cannot
    claim one configuration and be filed under another)."""
    from perserbench.method import config_hash

    config = result.method.get("config")
    if not isinstance(config, dict) or not all(isinstance(k, str) and k.isidentifier() for k in config):
        raise PerserbenchError(f"{src}: method.config must be an object of named options")
    as_dataclass = dataclasses.make_dataclass("Config", list(config))(**config)
    expected = config_hash(result.method_name, as_dataclass)
    if result.method.get("config_hash") != expected:
        raise PerserbenchError(f"{src}: method.config_hash {result.method.get('config_hash')!r} is not the hash "
                               f"of its config ({expected})")
