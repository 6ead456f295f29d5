"""The one result schema: :class:`RunResult`, written as versioned JSON.

A result file holds everything needed to regenerate every figure built from it: the
per-episode metrics are the primary data; per-listener aggregates and the summary are derived
from them (and :func:`validate` recomputes them). Files are written atomically (temp file in
the same directory + ``os.replace``) so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perserbench.errors import PerserbenchError
from perserbench.inputs import read_text

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 3  # 2: `audit` and method.reference (issue 9); 3: per-class counts, pooled macro-F1 (issue 13)
EPISODE_METRICS = ("macro_f1", "micro_f1", "top1")  # scored per episode, then averaged per listener
# What identifies an episode record in a result: no two records of a valid file share it.
EPISODE_KEY = ("fold", "listener", "scenario", "shots", "episode", "seed")
POOLED_METRIC = "pooled_macro_f1"  # scored per listener from the counts pooled over its episodes
METRICS = (*EPISODE_METRICS, POOLED_METRIC)
# The headline metric of `compare` and the board, and the one shown beside it. The choice and
# its evidence (run-to-run SD, bias on the uniform controls, ranking agreement) are in
# docs/metrics.md; this is the one place to change it.
PRIMARY_METRIC = "macro_f1"
SECONDARY_METRIC = POOLED_METRIC
METRIC_LABELS = {"macro_f1": "macro-F1 (per episode)", "micro_f1": "micro-F1", "top1": "top-1 accuracy",
                 POOLED_METRIC: "listener-pooled macro-F1"}


@dataclass(frozen=True)
class EpisodeRecord:
    """Metrics of one method on one episode. ``seed`` is the method's training seed.

    ``tp``/``fp``/``fn`` are the per-class counts over the episode's query items (in the
    corpus's class order): the listener-pooled macro-F1 sums them over a listener's episodes,
    and validation recomputes ``macro_f1`` and ``micro_f1`` from them."""

    fold: int
    listener: str
    scenario: str
    shots: int
    episode: int
    seed: int
    n_support: int
    n_query: int
    macro_f1: float
    micro_f1: float
    top1: float
    tp: list[int]
    fp: list[int]
    fn: list[int]


@dataclass(frozen=True)
class ListenerRecord:
    """One listener's scores for one (scenario, shots) cell: the episode metrics are means over
    its episodes (and seeds); ``pooled_macro_f1`` is the macro-F1 of the class counts summed
    over those episodes (see :func:`perserbench.metrics.pooled_f1`)."""

    listener: str
    scenario: str
    shots: int
    n_episodes: int
    macro_f1: float
    micro_f1: float
    top1: float
    pooled_macro_f1: float


@dataclass(frozen=True)
class SummaryRecord:
    """Headline for one (scenario, shots, metric): mean over listeners, hierarchical-bootstrap CI."""

    scenario: str
    shots: int
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n_listeners: int
    n_episodes: int


@dataclass
class RunResult:
    schema_version: int
    perserbench_version: str
    git_revision: str | None
    task: dict[str, Any]  # name, version, hash
    method: dict[str, Any]  # name, config, config_hash, reference (privileged, never ranked)
    seeds: list[int]
    scenarios: list[str]
    shots: list[int]
    episodes: list[EpisodeRecord]
    listeners: list[ListenerRecord]
    summary: list[SummaryRecord]
    wall_time_s: float
    audit: dict[str, Any]  # the independence audit: ran, passed, episodes, max_abs_diff, tolerance
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def method_name(self) -> str:
        return str(self.method["name"])

    @property
    def task_name(self) -> str:
        return str(self.task["name"])

    @property
    def is_reference(self) -> bool:
        """A privileged reference (e.g. the synthetic oracle): reported beside, never ranked."""
        return bool(self.method.get("reference", False))

    @property
    def audit_passed(self) -> bool:
        return bool(self.audit.get("ran")) and bool(self.audit.get("passed"))

    def to_frame(self) -> pd.DataFrame:
        """One row per scored episode (the primary data): ``method``, ``task``, then the
        :class:`EpisodeRecord` fields. The method and task columns make frames of several
        results concatenate into one long table (``pd.concat``) without losing who is who."""
        return self._frame(self.episodes, EpisodeRecord)

    def listener_frame(self) -> pd.DataFrame:
        """One row per (listener, scenario, shots): the mean over that listener's episodes,
        the unit every test and interval in perserbench is computed over."""
        return self._frame(self.listeners, ListenerRecord)

    def _frame(self, records: list[Any], cls: type) -> pd.DataFrame:
        import pandas as pd  # here, not at module import: the CLI loads results without it

        columns = ["method", "task", *(f.name for f in dataclasses.fields(cls))]
        rows = [{"method": self.method_name, "task": self.task_name, **asdict(r)} for r in records]
        return pd.DataFrame(rows, columns=columns)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RunResult:
        if not isinstance(data, dict):
            raise PerserbenchError(f"{source}: not a RunResult (expected a JSON object)")
        version = data.get("schema_version")
        if version == 2:
            raise PerserbenchError(
                f"{source}: schema_version 2 predates the per-class counts that the listener-pooled macro-F1 "
                f"needs (schema {SCHEMA_VERSION}); re-run the method with this perserbench version"
            )
        if version != SCHEMA_VERSION:
            raise PerserbenchError(
                f"{source}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION}); "
                "re-run the method with this perserbench version"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data) - {"environment"})
        if missing:
            raise PerserbenchError(f"{source}: RunResult is missing field(s) {', '.join(missing)}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise PerserbenchError(f"{source}: RunResult has unknown field(s) {', '.join(unknown)}")
        try:
            kwargs = dict(data)
            kwargs["episodes"] = [EpisodeRecord(**r) for r in data["episodes"]]
            kwargs["listeners"] = [ListenerRecord(**r) for r in data["listeners"]]
            kwargs["summary"] = [SummaryRecord(**r) for r in data["summary"]]
        except TypeError as exc:
            raise PerserbenchError(f"{source}: malformed record in RunResult ({exc})") from None
        return cls(**kwargs)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    if not isinstance(text, str):
        raise TypeError(f"write_atomic writes text, got {type(text).__name__}")
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """The one atomic writer (temp file in the same directory, fsync, ``os.replace``); a
    failure at any point leaves the old file, if any, and no temp file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_result(result: RunResult, path: Path) -> Path:
    write_atomic(path, result.to_json())
    return path


def load_result(path: Path) -> RunResult:
    text = read_text(path, "result file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PerserbenchError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return RunResult.from_dict(data, source=str(path))


def find_result_files(paths: list[Path]) -> list[Path]:
    """Expand directories into the ``*.json`` result files under them (sorted, recursive)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*.json") if not q.name.startswith(".")))
        elif p.exists():
            files.append(p)
        else:
            raise PerserbenchError(f"{p}: no such result file or directory")
    if not files:
        raise PerserbenchError(f"no result files (*.json) found in {', '.join(map(str, paths))}")
    return files
