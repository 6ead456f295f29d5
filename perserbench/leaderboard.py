"""The leaderboard (DESIGN §5): validated result files in, a deterministic board out.

The board is a pure function of the committed files in ``leaderboard/results/``; nothing is
ever typed into it. Every result file is *validated* before it is shown:

* schema version (by :func:`perserbench.results.load_result`);
* the task hash equals the hash of ``tasks/<task>.toml`` resolved now, so a number is only
  shown next to others measured on identical splits;
* every required episode — each (fold, listener, scenario, K, episode) of the task for the
  result's scenarios and shots, times each seed — is present exactly once, with the support
  and query sizes the task prescribes;
* the per-listener aggregates and the summary (including its hierarchical-bootstrap CI, which is
  deterministic with seed 0) recompute from the per-episode metrics to within 1e-9, and the
  method's config hash recomputes from its config.

Files are named canonically (:func:`perserbench.runner.result_filename`); two files may not
claim the same (task, method, scenario, K) cell. Rendering is deterministic: sorted inputs,
fixed-precision numbers, no timestamps, PNGs written without a ``Software`` tag, so a rebuild
of an unchanged board is byte-identical — which is what ``build --check`` relies on.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perserbench.errors import PerserbenchError
from perserbench.results import METRICS, PRIMARY_METRIC, RunResult, load_result, write_atomic

REFERENCE_METHOD = "consensus"  # significance of every other method is tested against it
CEILING_METHODS = ("oracle",)  # shown as a ceiling row, never ranked
TOLERANCE = 1e-9
ALPHA = 0.05
BOARD_FILES = ("README.md", "index.html")
RESULTS_DIR = "results"
EpisodeKey = tuple[int, str, str, int, int]  # (fold, listener, scenario, K, episode)


def default_board_dir() -> Path:
    """``$PERSERBENCH_LEADERBOARD`` if set, else ``leaderboard/`` next to ``tasks/`` in the checkout."""
    override = os.environ.get("PERSERBENCH_LEADERBOARD")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "leaderboard"


# --------------------------------------------------------------------------- validation


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
        from perserbench.tasks import load_task

        path = self.tasks_dir / f"{name}.toml"
        if not path.is_file():
            raise PerserbenchError(
                f"{source}: task {name!r} has no spec {path}; only results of tasks in {self.tasks_dir} "
                "can be validated"
            )
        try:
            task = load_task(path, self.corpus_options)
            required = {ep.key: (len(ep.support), len(ep.query)) for ep in all_episodes(task)}
            task_hash = split_hash(task)
        except PerserbenchError as exc:
            raise PerserbenchError(f"{source}: task {name!r} cannot be resolved: {exc}") from None
        spec = task.spec
        return TaskInfo(spec.name, spec.version, task_hash, tuple(spec.episodes.scenarios),
                        tuple(spec.episodes.shots), required)


def validate_result(path: Path, resolver: TaskResolver) -> RunResult:
    """Load ``path`` and check it against its task and against itself; the first problem is
    raised as a one-line :class:`PerserbenchError` naming the file and the reason."""
    result = load_result(path)
    src = str(path)
    for key in ("name", "version", "hash"):
        if not isinstance(result.task.get(key), str):
            raise PerserbenchError(f"{src}: task.{key} is missing or not a string")
    info = resolver.get(result.task_name, src)
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
        for metric in METRICS:
            value = getattr(rec, metric)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise PerserbenchError(f"{src}: {_describe(key + (rec.seed,))} has {metric} = {value!r}, "
                                       "not a number in [0, 1]")


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


# --------------------------------------------------------------------------- the board model


@dataclass(frozen=True)
class Cell:
    """One method's numbers for one (scenario, K) of one task, from one result file."""

    method: str
    scenario: str
    shots: int
    mean: float
    ci_low: float
    ci_high: float
    micro_f1: float
    top1: float
    n_listeners: int
    n_episodes: int
    per_listener: dict[str, float]
    file: str
    version: str


@dataclass
class Comparison:
    """A method against the reference in one cell, paired over their common test listeners."""

    delta: float
    p_value: float
    p_adjusted: float
    n_listeners: int

    @property
    def marker(self) -> str:
        if not self.p_adjusted <= ALPHA:
            return ""
        return "▲" if self.delta > 0 else "▼"


@dataclass
class TaskBoard:
    name: str
    version: str
    hash: str
    cells: dict[tuple[str, int], dict[str, Cell]] = field(default_factory=dict)  # (scenario, K) -> method -> cell
    comparisons: dict[tuple[str, int], dict[str, Comparison]] = field(default_factory=dict)

    @property
    def scenarios(self) -> list[str]:
        from perserbench.tasks import SCENARIOS

        return sorted({s for s, _ in self.cells}, key=SCENARIOS.index)

    @property
    def shots(self) -> list[int]:
        return sorted({k for _, k in self.cells})

    @property
    def cell_keys(self) -> list[tuple[str, int]]:
        return [(s, k) for s in self.scenarios for k in self.shots if (s, k) in self.cells]

    @property
    def methods(self) -> list[str]:
        return sorted({m for cell in self.cells.values() for m in cell})

    def files(self, method: str) -> list[str]:
        return sorted({c[method].file for c in self.cells.values() if method in c})

    def versions(self, method: str) -> list[str]:
        return sorted({c[method].version for c in self.cells.values() if method in c})

    def overall(self) -> list[tuple[int | None, str, float | None]]:
        """(rank, method, mean macro-F1 over the task's cells) for ranked methods: best mean
        first; a method missing any cell of the board is listed after, unranked (its mean
        would not be comparable). Ceiling methods are left out."""
        keys = self.cell_keys
        complete, partial = [], []
        for method in self.methods:
            if method in CEILING_METHODS:
                continue
            values = [self.cells[k][method].mean for k in keys if method in self.cells[k]]
            if len(values) == len(keys):
                complete.append((float(np.mean(values)), method))
            else:
                partial.append(method)
        complete.sort(key=lambda t: (-t[0], t[1]))
        ranked = _ranks([mean for mean, _ in complete])
        return ([(r, method, mean) for r, (mean, method) in zip(ranked, complete)]
                + [(None, m, None) for m in sorted(partial)])

    def cell_ranking(self, key: tuple[str, int]) -> list[tuple[int, Cell]]:
        cells = sorted((c for m, c in self.cells[key].items() if m not in CEILING_METHODS),
                       key=lambda c: (-c.mean, c.method))
        return list(zip(_ranks([c.mean for c in cells]), cells))


def _ranks(values: Sequence[float]) -> list[int]:
    """Competition ranks ("1, 2, 2, 4") of values already sorted best-first; equal values
    (to the displayed precision of 1e-12) share a rank."""
    out: list[int] = []
    for i, v in enumerate(values):
        out.append(out[-1] if i and abs(values[i - 1] - v) < 1e-12 else i + 1)
    return out


@dataclass
class Board:
    tasks: dict[str, TaskBoard]
    files: list[str]


def result_files(board_dir: Path) -> list[Path]:
    results = Path(board_dir) / RESULTS_DIR
    if not results.is_dir():
        return []
    return sorted(p for p in results.iterdir() if p.suffix == ".json" and not p.name.startswith("."))


def load_board(board_dir: Path, resolver: TaskResolver) -> Board:
    """Validate every result file of the board and arrange their cells by task."""
    from perserbench.runner import result_filename

    results_dir = Path(board_dir) / RESULTS_DIR
    stray = sorted(p for p in results_dir.glob("*") if p.is_file() and p.suffix != ".json"
                   and not p.name.startswith(".")) if results_dir.is_dir() else []
    if stray:
        raise PerserbenchError(f"{stray[0]}: not a result file (*.json); remove it from the board")
    tasks: dict[str, TaskBoard] = {}
    names = []
    for path in result_files(board_dir):
        result = validate_result(path, resolver)
        canonical = result_filename(result)
        if path.name != canonical:
            raise PerserbenchError(f"{path}: result files on the board must use their canonical name {canonical} "
                                   "(use `perserbench leaderboard submit`)")
        names.append(path.name)
        board = tasks.setdefault(result.task_name, TaskBoard(result.task_name, result.task["version"],
                                                             result.task["hash"]))
        for cell in cells_of(result, path.name):
            slot = board.cells.setdefault((cell.scenario, cell.shots), {})
            if cell.method in slot:
                raise PerserbenchError(
                    f"{path}: {cell.method} on {result.task_name} {cell.scenario} K={cell.shots} is already "
                    f"on the board from {slot[cell.method].file}; keep one of the two files"
                )
            slot[cell.method] = cell
    for board in tasks.values():
        board.comparisons = {key: compare_to_reference(board.cells[key]) for key in board.cell_keys}
    return Board(dict(sorted(tasks.items())), names)


def cells_of(result: RunResult, file: str) -> list[Cell]:
    summary = {(r.scenario, r.shots, r.metric): r for r in result.summary}
    per_listener: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for rec in result.listeners:
        per_listener[(rec.scenario, rec.shots)][rec.listener] = getattr(rec, PRIMARY_METRIC)
    out = []
    for scenario in result.scenarios:
        for k in result.shots:
            head = summary[(scenario, k, PRIMARY_METRIC)]
            out.append(Cell(result.method_name, scenario, k, head.mean, head.ci_low, head.ci_high,
                            summary[(scenario, k, "micro_f1")].mean, summary[(scenario, k, "top1")].mean,
                            head.n_listeners, head.n_episodes, dict(sorted(per_listener[(scenario, k)].items())),
                            file, result.perserbench_version))
    return out


def compare_to_reference(cells: dict[str, Cell]) -> dict[str, Comparison]:
    """Every ranked method against ``consensus`` in one cell: paired test over the common test
    listeners (from :mod:`perserbench.stats`), Holm-adjusted over the methods of the cell."""
    from perserbench import stats

    reference = cells.get(REFERENCE_METHOD)
    if reference is None:
        return {}
    raw: dict[str, tuple[float, float, int]] = {}
    for method, cell in sorted(cells.items()):
        if method == REFERENCE_METHOD or method in CEILING_METHODS:
            continue
        common = sorted(set(cell.per_listener) & set(reference.per_listener))
        a = np.array([cell.per_listener[x] for x in common])
        b = np.array([reference.per_listener[x] for x in common])
        delta = float(np.mean(a - b)) if common else float("nan")
        raw[method] = (delta, _paired_p_value(stats, a, b), len(common))
    if not raw:
        return {}
    adjusted = _holm(stats, [p for _, p, _ in raw.values()])
    return {m: Comparison(d, p, q, n) for (m, (d, p, n)), q in zip(raw.items(), adjusted)}


def _paired_p_value(stats: Any, a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.allclose(a, b):
        return 1.0
    return float(stats.paired_test(a, b).p_value)


def _holm(stats: Any, p_values: list[float]) -> list[float]:
    return [float(q) for q in stats.holm(p_values)]


# --------------------------------------------------------------------------- rendering


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _ci(cell: Cell) -> str:
    return f"{_fmt(cell.mean)} [{_fmt(cell.ci_low)}, {_fmt(cell.ci_high)}]"


def _p(value: float) -> str:
    return "—" if not math.isfinite(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def render_markdown(board: Board) -> str:
    lines = [
        "# perserbench leaderboard",
        "",
        ("Generated by `perserbench leaderboard build` from the result files in [`results/`](results/) "
        "only; CI runs `perserbench leaderboard build --check`, which fails when a result file is "
        "invalid or this page is stale. An interactive version with plots is in `index.html`."),
        "",
        ("Cells: macro-F1 (mean over test listeners) with its 95% hierarchical-bootstrap CI. "
        f"▲/▼: significantly better/worse than `{REFERENCE_METHOD}` (paired over test listeners, "
        f"Holm-adjusted over the methods of the cell, α = {ALPHA}). Rank: by mean macro-F1 over all "
        "cells of the task; methods without every cell are listed unranked. "
        f"{', '.join(f'`{m}`' for m in CEILING_METHODS)} is the ceiling (true listener model), not ranked."),
        "",
    ]
    if not board.tasks:
        lines += ["No results yet. Add one with `perserbench leaderboard submit RESULT.json`.", ""]
    for task in board.tasks.values():
        lines += [f"## {task.name}", "", f"Task version {task.version}, split hash `{task.hash}`.", ""]
        keys = task.cell_keys
        header = ["Rank", "Method"] + [f"{s} K={k}" for s, k in keys] + ["Result", "perserbench"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---:", ":---"] + ["---:"] * len(keys) + [":---", ":---"]) + "|")
        rows = task.overall() + [(None, m, None) for m in CEILING_METHODS if m in task.methods]
        for rank, method, _ in rows:
            label = f"{method} (ceiling)" if method in CEILING_METHODS else method
            values = []
            for key in keys:
                cell = task.cells[key].get(method)
                comp = task.comparisons.get(key, {}).get(method)
                values.append("—" if cell is None else _ci(cell) + (f" {comp.marker}" if comp and comp.marker else ""))
            links = ", ".join(f"[{i + 1}](results/{f})" for i, f in enumerate(task.files(method)))
            rank_text = "" if method in CEILING_METHODS else ("—" if rank is None else str(rank))
            lines.append("| " + " | ".join([rank_text, label, *values, links, ", ".join(task.versions(method))]) + " |")
        lines.append("")
    lines += ["## Submitting", "",
              ("Run your method with `perserbench run --method NAME --task TASK --out runs`, then "
              "`perserbench leaderboard submit runs/<file>.json` and `perserbench leaderboard build`, "
              "and commit `leaderboard/`. See `docs/add-your-method.md`."), ""]
    return "\n".join(lines)


def _png(fig: Any) -> str:
    """A figure as a base64 PNG data URI, byte-stable (no Software/date metadata)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def shots_figure_uri(task: TaskBoard, scenario: str) -> str | None:
    """Score-vs-shots curves (with CI bands) of every method in one scenario."""
    from perserbench import plots

    series = {}
    for method in task.methods:
        points = [(k, task.cells[(scenario, k)][method]) for k in task.shots
                  if (scenario, k) in task.cells and method in task.cells[(scenario, k)]]
        if points:
            series[method] = {"shots": [k for k, _ in points], "mean": [c.mean for _, c in points],
                              "low": [c.ci_low for _, c in points], "high": [c.ci_high for _, c in points]}
    if not series:
        return None
    fig = plots.shots_curve(series, title=f"{task.name} · {scenario}", ylabel="macro-F1",
                            reference=list(CEILING_METHODS))
    return _png(fig)


def cd_figure_uri(task: TaskBoard, key: tuple[str, int]) -> str | None:
    """Critical-difference diagram of the ranked methods in one cell, listeners as blocks."""
    from perserbench import plots

    cells = {m: c for m, c in task.cells[key].items() if m not in CEILING_METHODS}
    common = sorted(set.intersection(*(set(c.per_listener) for c in cells.values()))) if cells else []
    if len(cells) < 3 or len(common) < 2:
        return None  # Friedman's test needs >= 3 methods; a CD diagram of two is a paired test
    methods = sorted(cells)
    scores = np.array([[cells[m].per_listener[x] for m in methods] for x in common])
    fig = plots.cd_diagram(scores, methods, title=f"{task.name} · {key[0]} K={key[1]} ({len(common)} listeners)")
    return _png(fig)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;
color:#1b1f24;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
.controls{display:flex;gap:1.5rem;align-items:center;background:#f6f8fa;padding:.6rem 1rem;
border:1px solid #d0d7de;border-radius:6px;position:sticky;top:0}
select{font-size:1rem;padding:.15rem .4rem}
table{border-collapse:collapse;margin:1rem 0;font-variant-numeric:tabular-nums;width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:.3rem .45rem;text-align:right;white-space:nowrap;font-size:.93rem}
th{background:#eef1f4;cursor:pointer;user-select:none}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
td.l,th.l{text-align:left}tfoot td{color:#57606a;font-style:italic}
.up{color:#1a7f37;font-weight:600}.down{color:#cf222e;font-weight:600}
.cell,.curve,.task{display:none}.cell.active,.curve.active,.task.active{display:block}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d8dee4}
figcaption{color:#57606a;font-size:.9rem}.empty{color:#57606a}small{color:#57606a;font-weight:normal}
"""

_JS = """
(function(){
  function show(){
    var t=document.getElementById('task').value,s=document.getElementById('scenario').value,
        k=document.getElementById('shots').value;
    document.querySelectorAll('.task').forEach(function(e){e.classList.toggle('active',e.dataset.task===t);});
    document.querySelectorAll('.task .cell').forEach(function(e){
      e.classList.toggle('active',e.dataset.scenario===s&&e.dataset.shots===k);});
    document.querySelectorAll('.task .curve').forEach(function(e){e.classList.toggle('active',e.dataset.scenario===s);});
    var sec=document.querySelector('.task.active'),none=document.getElementById('none');
    none.style.display=(sec&&!sec.querySelector('.cell.active'))?'block':'none';
  }
  ['task','scenario','shots'].forEach(function(id){document.getElementById(id).addEventListener('change',show);});
  document.querySelectorAll('table.sortable th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var table=th.closest('table'),body=table.tBodies[0],col=Array.prototype.indexOf.call(th.parentNode.children,th);
      var asc=!th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[col].dataset.v,y=b.cells[col].dataset.v,nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:String(x).localeCompare(String(y));
        return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
  show();
})();
"""


def _td(text: str, sort_value: Any, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<td{cls} data-v="{html.escape(str(sort_value))}">{text}</td>'


def _cell_table(task: TaskBoard, key: tuple[str, int]) -> str:
    head = ["Rank", "Method", "macro-F1", "95% CI", f"Δ vs {REFERENCE_METHOD}", "p (Holm)", "micro-F1",
            "top-1", "listeners", "episodes", "result", "perserbench"]
    left = {"Method", "result", "perserbench"}
    out = ['<table class="sortable"><thead><tr>'
           + "".join(f'<th class="l">{h}</th>' if h in left else f"<th>{h}</th>" for h in head)
           + "</tr></thead><tbody>"]
    comparisons = task.comparisons.get(key, {})

    def row(rank: int | None, cell: Cell) -> str:
        comp = comparisons.get(cell.method)
        if cell.method == REFERENCE_METHOD:
            delta, p = _td("reference", 0.0), _td("—", 2.0)
        elif comp is None:
            delta, p = _td("—", ""), _td("—", 2.0)
        else:
            css = {"▲": "up", "▼": "down"}.get(comp.marker, "")
            delta = _td(f"{comp.delta:+.3f} {comp.marker}".strip(), f"{comp.delta:.12f}", css)
            p = _td(_p(comp.p_adjusted), f"{comp.p_adjusted:.12f}")
        link = (f'<a href="{RESULTS_DIR}/{html.escape(cell.file)}" title="{html.escape(cell.file)}">'
                f'{html.escape(cell.file.rsplit("__", 1)[-1])}</a>')  # the config hash; full name on hover
        name = html.escape(cell.method) + (" (ceiling)" if cell.method in CEILING_METHODS else "")
        return ("<tr>" + _td("" if rank is None else str(rank), "" if rank is None else rank)
                + _td(name, cell.method, "l") + _td(_fmt(cell.mean), f"{cell.mean:.12f}")
                + _td(f"[{_fmt(cell.ci_low)}, {_fmt(cell.ci_high)}]", f"{cell.ci_low:.12f}") + delta + p
                + _td(_fmt(cell.micro_f1), f"{cell.micro_f1:.12f}") + _td(_fmt(cell.top1), f"{cell.top1:.12f}")
                + _td(str(cell.n_listeners), cell.n_listeners) + _td(str(cell.n_episodes), cell.n_episodes)
                + _td(link, cell.file, "l") + _td(html.escape(cell.version), cell.version, "l") + "</tr>")

    out += [row(rank, cell) for rank, cell in task.cell_ranking(key)]
    out.append("</tbody><tfoot>")
    out += [row(None, task.cells[key][m]) for m in CEILING_METHODS if m in task.cells[key]]
    out.append("</tfoot></table>")
    return "\n".join(out)


def render_html(board: Board) -> str:
    tasks = list(board.tasks.values())
    scenarios = sorted({s for t in tasks for s in t.scenarios}, key=("seen", "unseen").index)
    shots = sorted({k for t in tasks for k in t.shots})
    default_scenario = "unseen" if "unseen" in scenarios else (scenarios[0] if scenarios else "")
    default_k = 5 if 5 in shots else (shots[0] if shots else "")

    def options(values: Iterable[Any], selected: Any, label: Any = str) -> str:
        return "".join(f'<option value="{html.escape(str(v))}"{" selected" if v == selected else ""}>'
                       f"{html.escape(label(v))}</option>" for v in values)

    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>perserbench leaderboard</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>perserbench leaderboard</h1>",
             ("<p>Listener-personalized speech emotion recognition. Built by <code>perserbench leaderboard "
             "build</code> from the validated result files in <code>results/</code> only. macro-F1 is the mean "
             "over test listeners with a 95% hierarchical-bootstrap CI; Δ and p compare each method with "
             f"<code>{REFERENCE_METHOD}</code>, paired over test listeners, Holm-adjusted within the cell "
             f"(▲/▼: significant at α = {ALPHA}). Click a column header to sort. The ceiling row "
             "(true listener model) is not ranked.</p>")]
    if not tasks:
        parts += ['<p class="empty">No results yet.</p>',
                  ('<select id="task" hidden></select><select id="scenario" hidden></select>'
                  '<select id="shots" hidden></select><p id="none"></p>')]
    else:
        parts.append('<div class="controls">'
                     f'<label>Task <select id="task">{options([t.name for t in tasks], tasks[0].name)}</select></label>'
                     f'<label>Scenario <select id="scenario">{options(scenarios, default_scenario)}</select></label>'
                     f'<label>K (shots) <select id="shots">{options(shots, default_k)}</select></label></div>')
        parts.append('<p id="none" class="empty" style="display:none">No results for this task, scenario and K.</p>')
    for i, task in enumerate(tasks):
        active = " active" if i == 0 else ""
        parts.append(f'<section class="task{active}" data-task="{html.escape(task.name)}">'
                     f"<h2>{html.escape(task.name)} <small>task version {html.escape(task.version)}, split hash "
                     f"<code>{task.hash}</code></small></h2>")
        for key in task.cell_keys:
            on = " active" if i == 0 and key == (default_scenario, default_k) else ""
            parts.append(f'<div class="cell{on}" data-scenario="{key[0]}" data-shots="{key[1]}">'
                         f"<h3>{key[0]}, K = {key[1]}</h3>")
            parts.append(_cell_table(task, key))
            uri = cd_figure_uri(task, key)
            if uri:
                parts.append(f'<figure><img alt="critical-difference diagram, {task.name} {key[0]} K={key[1]}" '
                             f'src="{uri}"><figcaption>Critical-difference diagram (Friedman + Nemenyi over test '
                             "listeners): mean rank per method; methods joined by a bar are not significantly "
                             "different.</figcaption></figure>")
            else:
                parts.append('<p class="empty">Critical-difference diagram needs at least three ranked methods '
                             "with common test listeners.</p>")
            parts.append("</div>")
        for scenario in task.scenarios:
            uri = shots_figure_uri(task, scenario)
            if uri:
                on = " active" if i == 0 and scenario == default_scenario else ""
                parts.append(f'<figure class="curve{on}" data-scenario="{scenario}"><img alt="macro-F1 versus '
                             f'shots, {task.name} {scenario}" src="{uri}"><figcaption>macro-F1 versus K '
                             f"({scenario}), shaded: 95% CI.</figcaption></figure>")
        parts.append("</section>")
    parts += [f"<script>{_JS}</script>", "</body></html>", ""]
    return "\n".join(parts)


def render(board: Board) -> dict[str, str]:
    """The board's files (name → text), a pure function of the validated results."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with plt.style.context("default"):
        return {"README.md": render_markdown(board), "index.html": render_html(board)}


# --------------------------------------------------------------------------- operations


def _publish(path: Path, text: str) -> None:
    """Atomic write, then world-readable like any checked-out file (the temp file is 0600)."""
    write_atomic(path, text)
    os.chmod(path, 0o644)


def build(board_dir: Path, resolver: TaskResolver) -> dict[str, str]:
    return render(load_board(board_dir, resolver))


def write_board(board_dir: Path, resolver: TaskResolver) -> list[Path]:
    """Rebuild and write README.md and index.html (atomically each)."""
    files = build(board_dir, resolver)
    out = []
    for name, text in files.items():
        path = Path(board_dir) / name
        _publish(path, text)
        out.append(path)
    return out


def check_board(board_dir: Path, resolver: TaskResolver) -> None:
    """Raise if any result is invalid or a committed board file differs from a rebuild."""
    files = build(board_dir, resolver)
    stale = []
    for name, text in files.items():
        path = Path(board_dir) / name
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            stale.append(name)
    if stale:
        raise PerserbenchError(
            f"{board_dir}: {', '.join(stale)} differ{'s' if len(stale) == 1 else ''} from a rebuild of "
            f"{len(result_files(board_dir))} result file(s); run `perserbench leaderboard build` and commit the result"
        )


def submit(paths: Sequence[Path], board_dir: Path, resolver: TaskResolver, replace: bool = False) -> list[Path]:
    """Validate each file and copy it, byte for byte, to ``results/<canonical name>``.

    All files are validated (and checked against the board for conflicting cells) before any
    is copied, so a refused batch leaves the board unchanged.
    """
    from perserbench.runner import result_filename

    results_dir = Path(board_dir) / RESULTS_DIR
    existing: dict[tuple[str, str, str, int], str] = {}
    for path in result_files(board_dir):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            result = RunResult.from_dict(data, source=str(path))
        except (PerserbenchError, json.JSONDecodeError):
            continue  # the board's own problems are reported by `build --check`, not here
        for s in result.scenarios:
            for k in result.shots:
                existing[(result.task_name, result.method_name, s, k)] = path.name
    plan: list[tuple[Path, Path]] = []
    for path in paths:
        path = Path(path)
        result = validate_result(path, resolver)
        target = results_dir / result_filename(result)
        if target.exists() and target.read_bytes() != path.read_bytes() and not replace:
            raise PerserbenchError(f"{path}: {target} already exists with other content; pass --replace to overwrite it")
        for s in result.scenarios:
            for k in result.shots:
                other = existing.get((result.task_name, result.method_name, s, k))
                if other is not None and other != target.name:
                    raise PerserbenchError(
                        f"{path}: {result.method_name} on {result.task_name} {s} K={k} is already on the board "
                        f"from {other}; remove that file first"
                    )
                existing[(result.task_name, result.method_name, s, k)] = target.name
        plan.append((path, target))
    for source, target in plan:
        _publish(target, source.read_text(encoding="utf-8"))
    return [t for _, t in plan]


def builtin_methods() -> list[str]:
    """Methods shipped in ``perserbench/methods/`` (not plugins): the default suite of the committed board."""
    from perserbench.registry import method_names, method_source

    return [m for m in method_names() if method_source(m).startswith("perserbench.methods.")]
