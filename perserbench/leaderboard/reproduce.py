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

**On another kind of machine** exactness cannot be asked for, and a benchmark whose numbers can
only be checked on the machine that wrote them cannot be checked by its readers. When the file
records an environment other than this one (CPU, vector instruction set, torch, numpy, Python)
or predates recording it, a re-run whose records differ is accepted *within tolerance* if every
(scenario, K) cell agrees statistically: per test listener, the re-run's mean primary metric
minus the file's, tested for equivalence (TOST, :func:`~perserbench.stats.equivalence_test`)
within the board's own negligible difference (:data:`~perserbench.stats.NO_HARM_MARGIN`, the
margin of its do-no-harm verdicts). A cell not shown equivalent is an error that names it. On
the same environment any difference stays an error, and ``exact=True`` (``--exact``) asks for
identity everywhere. What this does not catch: an edit that moves no cell by as much as the
margin (one listener's records, say) passes on another machine; the message always says how
many records differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perserbench.errors import PerserbenchError
from perserbench.leaderboard.validate import TaskResolver, validate_result
from perserbench.results import EPISODE_KEY, EPISODE_METRICS, PRIMARY_METRIC, RunResult
from perserbench.stats import NO_HARM_MARGIN, EquivalenceTest, equivalence_test

ENVIRONMENT_KEYS = ("cpu", "cpu_capability", "torch", "numpy", "python")


@dataclass(frozen=True)
class CellAgreement:
    """One (scenario, K) cell of a re-run against its file: the cell's mean primary metric in
    each (over listeners) and the TOST of the per-listener differences, re-run − file."""

    scenario: str
    shots: int
    file_mean: float
    rerun_mean: float
    test: EquivalenceTest | None  # None: fewer than 2 listeners, nothing can be shown

    @property
    def equivalent(self) -> bool:
        return self.test is not None and self.test.equivalent

    def describe(self) -> str:
        where = f"{self.scenario} K={self.shots}"
        if self.test is None:
            return f"{where}: fewer than 2 listeners, so no agreement can be shown"
        t = self.test
        return (f"{where}: per-listener mean {PRIMARY_METRIC} differs by {t.mean:+.4f} "
                f"({100 * (1 - 2 * t.alpha):.0f}% CI {t.ci_low:+.4f} to {t.ci_high:+.4f}, {t.n} listeners; "
                f"file {self.file_mean:.4f}, re-run {self.rerun_mean:.4f})")


@dataclass(frozen=True)
class Reproduction:
    path: Path
    result: RunResult
    episodes: int  # episode records compared
    wall_time_s: float
    differing: int = 0  # records that differ: 0 = reproduced exactly
    cells: tuple[CellAgreement, ...] = ()  # with differing records: every cell shown equivalent
    elsewhere: str = ""  # with differing records: how the file's environment differs from this one

    @property
    def exact(self) -> bool:
        return self.differing == 0


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


def reproduce(path: Path, resolver: TaskResolver, progress: bool = False, exact: bool = False) -> Reproduction:
    """Re-run the result in ``path`` and compare; a :class:`PerserbenchError` names the first
    difference (or why the file cannot be re-run). A file written in another environment whose
    records differ is accepted when every cell agrees within tolerance (module docstring),
    unless ``exact``."""
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
    comparison = compare_files(json.loads(path.read_text(encoding="utf-8")), json.loads(again.to_json()), exact)
    if comparison.difference is None:
        return Reproduction(path, result, comparison.records, again.wall_time_s)
    head = (f"{path}: not reproduced: {comparison.difference} ({comparison.differing} of {comparison.records} "
            "episode records differ)")
    if not comparison.tolerance_applies:
        raise PerserbenchError(f"{head}; this file is not what {name!r} produces here with its recorded config and "
                               f"seeds{comparison.note}")
    if not comparison.within_tolerance:
        disagreeing = [cell for cell in comparison.cells if not cell.equivalent]
        raise PerserbenchError(f"{head}, and not within tolerance: {len(disagreeing)} of {len(comparison.cells)} cells "
                               f"not shown equivalent within ±{NO_HARM_MARGIN} (TOST), e.g. "
                               f"{largest_difference(disagreeing).describe()}{comparison.note}")
    return Reproduction(path, result, comparison.records, again.wall_time_s, comparison.differing, comparison.cells,
                        comparison.elsewhere)


@dataclass(frozen=True)
class RerunComparison:
    """A re-run's result file against the committed one (both as stored), by the rule of the
    module docstring."""

    records: int  # the file's episode records
    difference: str | None  # the first difference; None: identical
    differing: int  # records that differ
    note: str  # how the file's recorded environment differs from the re-run's ("" = the same)
    elsewhere: str  # the same, as a list for a message
    # Per-cell agreement, computed exactly when the tolerance applies: records differ, in another
    # environment, over the same episodes, and exactness was not asked for.
    cells: tuple[CellAgreement, ...]

    @property
    def tolerance_applies(self) -> bool:
        return bool(self.cells)

    @property
    def within_tolerance(self) -> bool:
        return self.tolerance_applies and all(cell.equivalent for cell in self.cells)


def compare_files(file: dict[str, Any], rerun: dict[str, Any], exact: bool = False) -> RerunComparison:
    """Compare a re-run with a result file (both parsed JSON, as stored)."""
    expected, got = file["episodes"], rerun["episodes"]
    difference = first_difference(expected, got)
    if difference is None:
        return RerunComparison(len(expected), None, 0, "", "", ())
    recorded, here = file.get("environment", {}), rerun.get("environment", {})
    note = environment_note(recorded, here)
    same_episodes = {record_key(r) for r in expected} == {record_key(r) for r in got}
    cells = tuple(cell_agreement(expected, got)) if note and same_episodes and not exact else ()
    elsewhere = "; ".join(environment_differences(recorded, here)) or "the file does not record its CPU"
    return RerunComparison(len(expected), difference, differing_records(expected, got), note, elsewhere, cells)


def largest_difference(cells: tuple[CellAgreement, ...] | list[CellAgreement]) -> CellAgreement:
    """The cell whose per-listener mean moved most (one that could not be tested only when no
    cell was: a measured difference says more)."""
    return max(cells, key=lambda c: -1.0 if c.test is None else abs(c.test.mean))


def cell_agreement(expected: list[dict[str, Any]], got: list[dict[str, Any]],
                   margin: float = NO_HARM_MARGIN) -> list[CellAgreement]:
    """Per (scenario, K) cell, the equivalence of the re-run ``got`` with the file ``expected``
    (episode records as stored): each test listener's mean primary metric over its episodes and
    seeds, re-run − file, tested against ``±margin``. Why per listener: listeners are the unit
    the board's tests resample, and a listener's episodes share its support pool and model."""

    def listener_means(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, float]]:
        cells: dict[tuple[str, int], dict[str, list[float]]] = {}
        for r in records:
            cells.setdefault((r["scenario"], r["shots"]), {}).setdefault(r["listener"], []).append(r[PRIMARY_METRIC])
        return {cell: {who: float(np.mean(v)) for who, v in by.items()} for cell, by in cells.items()}

    before, after = listener_means(expected), listener_means(got)
    out = []
    for (scenario, shots), file_means in sorted(before.items()):
        rerun_means = after.get((scenario, shots), {})
        listeners = sorted(set(file_means) & set(rerun_means))
        diffs = [rerun_means[w] - file_means[w] for w in listeners]
        test = equivalence_test(diffs, margin) if len(diffs) >= 2 else None
        out.append(CellAgreement(scenario, shots, float(np.mean(list(file_means.values()))),
                                 float(np.mean(list(rerun_means.values()))) if rerun_means else float("nan"), test))
    return out


def differing_records(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> int:
    """How many of the file's episode records the re-run lacks or has otherwise."""
    by_key = {record_key(r): r for r in got}
    return sum(by_key.get(record_key(r)) != r for r in expected)


def environment_note(recorded: dict[str, Any], here: dict[str, Any]) -> str:
    """What differs between the environment a file records and this one, as the end of the error.
    Why: runs are deterministic on one kind of machine, but float kernels differ between CPU kinds
    and library versions, and a probability at a decision threshold can land on either side; a few
    differing records then say "another machine", not "edited"."""
    changed = environment_differences(recorded, here)
    unknown = [k for k in ("cpu", "cpu_capability") if k not in recorded]
    if changed:
        return (f"; the file was written elsewhere ({'; '.join(changed)}): float kernels differ between machines, "
                "so compare on the machine kind it names")
    if unknown:
        return (f"; the file does not record its {' or '.join(unknown)} (written before they were recorded): if it "
                "was written on another kind of CPU, float kernels that differ there explain a few differing records")
    return ""


def environment_differences(recorded: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """What a file's recorded environment says differs from this one ("cpu 'X' there, 'Y' here")."""
    return [f"{k} {recorded[k]!r} there, {here.get(k)!r} here" for k in ENVIRONMENT_KEYS
            if k in recorded and recorded[k] != here.get(k)]
