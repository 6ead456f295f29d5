"""Re-run a result file and check it is what its method produces (DESIGN §5).

Validation (:mod:`.validate`) proves a file is complete and consistent with itself, and the
plausibility checks keep it under the ceiling; neither can tell a file that a method wrote
from one that was typed or edited, with its aggregates recomputed to match. The board is built
from committed files, and CI re-runs only the built-in methods. :func:`reproduce` closes the
gap for any method that is installed: it runs the file's method, with the file's config, on
the file's task, scenarios, shots, seeds and control, sealed as ``perserbench run`` runs it,
and compares every episode record with the file's, exactly. Runs are deterministic given the
seeds (the runner re-seeds every step), so any difference means the file is not what this
code produces here: edited, made by other code, or on another kind of machine (float kernels
differ between CPU kinds and library versions, and a probability at a decision threshold can
land on either side: on the committed board, 8 of 1,280 records of a ``consensus`` file written
on another CPU). The error counts the differing records and names what the file's recorded
environment says differs. ``perserbench leaderboard reproduce`` is the command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perserbench.errors import PerserbenchError
from perserbench.leaderboard.validate import TaskResolver, validate_result
from perserbench.results import EPISODE_KEY, EPISODE_METRICS, RunResult


@dataclass(frozen=True)
class Reproduction:
    path: Path
    result: RunResult
    episodes: int  # episode records compared, every one identical
    wall_time_s: float


def config_overrides(config: dict[str, Any]) -> dict[str, str]:
    """A recorded config (``method.config``) as the ``key=value`` overrides that rebuild it."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if value is None:
            return "none"
        if isinstance(value, list):
            return ",".join(map(str, value))
        return str(value)  # a float's str is its shortest repr: it parses back to the same float

    return {key: text(value) for key, value in config.items()}


def record_key(record: dict[str, Any]) -> tuple:
    """Which episode a stored record is (:data:`~perserbench.results.EPISODE_KEY`'s fields)."""
    return tuple(record[field] for field in EPISODE_KEY)


def first_difference(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> str | None:
    """How the episode records ``got`` first differ from ``expected`` (both as the result file
    stores them), or None when they are identical."""
    if expected == got:
        return None
    by_key = {record_key(r): r for r in got}
    for record in expected:
        other = by_key.get(record_key(record))
        fold, listener, scenario, shots, episode, seed = record_key(record)
        where = f"episode {episode} of listener {listener!r} (fold {fold}, {scenario}, K={shots}, seed {seed})"
        if other is None:
            return f"{where} is in the file but not in the re-run"
        for field in sorted(record, key=lambda f: (f not in EPISODE_METRICS, f)):  # the scores first
            if other.get(field) != record[field]:
                return f"{where}: {field} is {record[field]!r} in the file but {other.get(field)!r} in the re-run"
    return f"the re-run has {len(got)} episode records, the file {len(expected)}"


def reproduce(path: Path, resolver: TaskResolver, progress: bool = False) -> Reproduction:
    """Re-run the result in ``path`` and compare; a :class:`PerserbenchError` names the first
    difference (or why the file cannot be re-run)."""
    from perserbench.api import evaluate
    from perserbench.plugins import describe

    result = validate_result(path, resolver)
    name = result.method_name
    overrides = config_overrides(result.method.get("config", {}))
    described = describe(name, overrides)
    if described.config_hash != result.method["config_hash"]:
        raise PerserbenchError(f"{path}: method {name!r} installed here builds config hash {described.config_hash} "
                               f"from the file's config, the file records {result.method['config_hash']}: the "
                               "method's Config changed since the file was written")
    again = evaluate(name, resolver.tasks_dir / f"{result.task_name}.toml", result.shots, result.scenarios,
                     result.seeds, overrides, resolver.corpus_options, progress=progress,
                     control=result.method.get("control", "own"))
    expected = json.loads(path.read_text(encoding="utf-8"))["episodes"]
    got = json.loads(again.to_json())["episodes"]
    difference = first_difference(expected, got)
    if difference is not None:
        raise PerserbenchError(f"{path}: not reproduced: {difference} ({differing_records(expected, got)} of "
                               f"{len(expected)} episode records differ); this file is not what {name!r} produces "
                               f"here with its recorded config and seeds{environment_note(result.environment, again.environment)}")
    return Reproduction(path, result, len(expected), again.wall_time_s)


def differing_records(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> int:
    """How many of the file's episode records the re-run lacks or has otherwise."""
    by_key = {record_key(r): r for r in got}
    return sum(by_key.get(record_key(r)) != r for r in expected)


def environment_note(recorded: dict[str, Any], here: dict[str, Any]) -> str:
    """What differs between the environment a file records and this one, as the end of the error.
    Why: runs are deterministic on one kind of machine, but float kernels differ between CPU kinds
    and library versions, and a probability at a decision threshold can land on either side; a few
    differing records then say "another machine", not "edited"."""
    keys = ("cpu", "cpu_capability", "torch", "numpy", "python")
    changed = [f"{k} {recorded[k]!r} there, {here.get(k)!r} here" for k in keys
               if k in recorded and recorded[k] != here.get(k)]
    unknown = [k for k in ("cpu", "cpu_capability") if k not in recorded]
    if changed:
        return (f"; the file was written elsewhere ({'; '.join(changed)}): float kernels differ between machines, "
                "so compare on the machine kind it names")
    if unknown:
        return (f"; the file does not record its {' or '.join(unknown)} (written before they were recorded): if it "
                "was written on another kind of CPU, float kernels that differ there explain a few differing records")
    return ""
