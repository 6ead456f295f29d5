"""``perserbench compare``: a statistical comparison report from result files.

Pipeline: result files → :func:`load_comparison` (checks that they are comparable, merges
seeds) → :func:`analyse` (all statistics, from :mod:`perserbench.stats`) → :func:`render`
(Markdown + self-contained HTML + PNG figures) → :func:`write_report` (atomic writes).

Conventions (docs/reading-the-report.md explains them to readers):

* The unit of analysis is the **test listener**. Each listener's score in a cell
  (task, scenario, K) is the mean over its episodes; tests pair methods over listeners, CIs
  resample listeners and then episodes.
* **Seeds**: a method run with several seeds (in one file or several) is averaged over seeds
  *within each listener-episode* first; the seeds are repeated measurements of the same
  episode, not extra episodes, so they narrow nothing they should not.
* A method is identified by its name; when one name appears with several configurations the
  label becomes ``name@<config hash>``.
* Results are only compared on identical splits: within a task the task hash must agree, and
  within a cell every method must have exactly the same listeners and episodes. Anything else
  is refused with a :class:`PerserbenchError` naming the field.
* Per cell, the family for Holm's correction is all pairs of methods in that cell; the
  marks of the summary table (▲/▼ against ``consensus``, † against the best) use those
  Holm-adjusted Wilcoxon p-values.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perserbench.errors import PerserbenchError
from perserbench.results import (
    METRICS,
    RunResult,
    find_result_files,
    load_result,
    write_atomic,
    write_bytes_atomic,
)
from perserbench.stats import (
    FriedmanResult,
    PairComparison,
    compare_pair,
    friedman,
    hierarchical_bootstrap_ci,
    holm,
)

REFERENCE = "consensus"
CEILINGS = ("oracle",)  # shown, drawn dashed, never "best" and not ranked
ALPHA = 0.05
CellKey = tuple[str, str, int]  # (task, scenario, K)
EpisodeKey = tuple[int, str, int]  # (fold, listener, episode)


# --------------------------------------------------------------------------- loading


@dataclass
class MethodScores:
    """One method's seed-averaged episode scores per cell."""

    label: str
    name: str
    config_hash: str
    files: list[str] = field(default_factory=list)
    seeds: set[int] = field(default_factory=set)
    cells: dict[CellKey, dict[EpisodeKey, float]] = field(default_factory=dict)


@dataclass
class ComparisonData:
    metric: str
    files: list[str]
    tasks: dict[str, str]  # name -> hash
    methods: dict[str, MethodScores]  # label -> scores

    def cell_keys(self) -> list[CellKey]:
        from perserbench.tasks import SCENARIOS

        keys = {k for m in self.methods.values() for k in m.cells}
        return sorted(keys, key=lambda k: (k[0], SCENARIOS.index(k[1]) if k[1] in SCENARIOS else 99, k[1], k[2]))

    def methods_in(self, key: CellKey) -> list[str]:
        return sorted(label for label, m in self.methods.items() if key in m.cells)


def load_comparison(paths: Sequence[Path], metric: str = "macro_f1") -> ComparisonData:
    """Load result files (directories are searched recursively) and check they are comparable."""
    if metric not in METRICS:
        raise PerserbenchError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    files = sorted({p.resolve() for p in find_result_files([Path(p) for p in paths])})
    results = [(str(f), load_result(f)) for f in files]
    return combine(results, metric)


def combine(results: Sequence[tuple[str, RunResult]], metric: str = "macro_f1") -> ComparisonData:
    """Merge (source, result) pairs into per-method, seed-averaged scores; refuse mismatches."""
    tasks: dict[str, tuple[str, str]] = {}  # name -> (hash, first file)
    configs: dict[tuple[str, str], set[str]] = defaultdict(set)  # (task, method) -> config hashes
    for src, r in results:
        seen = tasks.setdefault(r.task_name, (str(r.task["hash"]), src))
        if seen[0] != r.task["hash"]:
            raise PerserbenchError(
                f"task.hash differs for task {r.task_name!r}: {seen[1]} has {seen[0]}, {src} has {r.task['hash']}; "
                "results are only compared on identical splits — re-run on the same task version"
            )
        configs[(r.task_name, r.method_name)].add(str(r.method.get("config_hash", "")))
    ambiguous = {name for (_, name), hashes in configs.items() if len(hashes) > 1}

    methods: dict[str, MethodScores] = {}
    raw: dict[tuple[str, CellKey, EpisodeKey], dict[int, float]] = defaultdict(dict)
    where: dict[tuple[str, CellKey, EpisodeKey, int], str] = {}
    for src, r in results:
        chash = str(r.method.get("config_hash", ""))
        label = f"{r.method_name}@{chash[:6]}" if r.method_name in ambiguous else r.method_name
        m = methods.setdefault(label, MethodScores(label, r.method_name, chash))
        m.files.append(src)
        for rec in r.episodes:
            cell, ep = (r.task_name, rec.scenario, rec.shots), (rec.fold, rec.listener, rec.episode)
            slot = raw[(label, cell, ep)]
            if rec.seed in slot:
                raise PerserbenchError(
                    f"episodes: {label} seed {rec.seed} {cell[1]} K={cell[2]} listener {rec.listener} episode "
                    f"{rec.episode} appears twice ({where[(label, cell, ep, rec.seed)]} and {src}); pass each run once"
                )
            slot[rec.seed] = float(getattr(rec, metric))
            where[(label, cell, ep, rec.seed)] = src
            m.seeds.add(rec.seed)
    seed_sets: dict[tuple[str, CellKey], set[frozenset[int]]] = defaultdict(set)
    for (label, cell, ep), by_seed in raw.items():
        methods[label].cells.setdefault(cell, {})[ep] = float(np.mean(list(by_seed.values())))
        seed_sets[(label, cell)].add(frozenset(by_seed))
    for (label, cell), sets in seed_sets.items():
        if len(sets) > 1:
            a, b = sorted(sorted(s) for s in sets)[:2]
            raise PerserbenchError(f"seeds: {label} on {cell[0]} {cell[1]} K={cell[2]} has seeds {a} for some "
                                   f"episodes and {b} for others; give every episode the same seeds")
    data = ComparisonData(metric, [s for s, _ in results], {t: h for t, (h, _) in sorted(tasks.items())},
                          dict(sorted(methods.items())))
    _check_cells(data)
    return data


def _check_cells(data: ComparisonData) -> None:
    """Every method of a cell must have the same listeners and the same episodes."""
    for key in data.cell_keys():
        labels = data.methods_in(key)
        first = labels[0]
        base = data.methods[first].cells[key]
        base_listeners = {(f, x) for f, x, _ in base}
        for other in labels[1:]:
            eps = data.methods[other].cells[key]
            listeners = {(f, x) for f, x, _ in eps}
            where = f"{key[0]} {key[1]} K={key[2]}"
            if listeners != base_listeners:
                diff = min(listeners ^ base_listeners)
                owner = other if diff in listeners else first
                raise PerserbenchError(
                    f"listeners differ in {where}: fold {diff[0]} listener {diff[1]} is in {owner} only "
                    f"({first} vs {other}); compare results of the same task and listener folds"
                )
            if set(eps) != set(base):
                diff = min(set(eps) ^ set(base))
                owner = other if diff in eps else first
                raise PerserbenchError(
                    f"episodes differ in {where}: listener {diff[1]} episode {diff[2]} is in {owner} only "
                    f"({first} vs {other}); every method must be run on the same episodes"
                )


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class MethodCell:
    label: str
    mean: float
    ci_low: float
    ci_high: float
    n_listeners: int
    n_episodes: int
    best: bool = False
    vs_reference: str = ""  # "▲", "▼" or ""
    worse_than_best: bool = False

    @property
    def marks(self) -> str:
        return self.vs_reference + ("†" if self.worse_than_best else "")


@dataclass
class CellAnalysis:
    key: CellKey
    methods: dict[str, MethodCell]
    pairs: list[PairComparison]
    friedman: FriedmanResult | None
    friedman_note: str = ""
    listener_scores: dict[str, list[float]] = field(default_factory=dict)  # label -> per-listener means

    @property
    def title(self) -> str:
        return f"{self.key[0]} · {self.key[1]} · K={self.key[2]}"


@dataclass
class Analysis:
    data: ComparisonData
    alpha: float
    cells: list[CellAnalysis]
    overall: FriedmanResult | None
    overall_note: str
    overall_blocks: list[CellKey]
    overall_scores: np.ndarray | None


def _ranked(labels: Sequence[str], data: ComparisonData) -> list[str]:
    return [x for x in labels if data.methods[x].name not in CEILINGS]


def _reference(labels: Sequence[str], data: ComparisonData) -> str | None:
    refs = [x for x in labels if data.methods[x].name == REFERENCE]
    return refs[0] if len(refs) == 1 else None


def analyse_cell(data: ComparisonData, key: CellKey, alpha: float = ALPHA) -> CellAnalysis:
    labels = data.methods_in(key)
    eps = sorted(data.methods[labels[0]].cells[key])
    # Listeners by name, episodes by index: the order perserbench.metrics.summarize uses, so a
    # single-seed method's CI here is exactly the one in its result file.
    listeners = sorted({(f, x) for f, x, _ in eps}, key=lambda fx: (fx[1], fx[0]))
    per_listener_eps = {fx: [e for e in eps if (e[0], e[1]) == fx] for fx in listeners}
    groups = {label: [np.array([data.methods[label].cells[key][e] for e in per_listener_eps[fx]])
                      for fx in listeners] for label in labels}
    cells: dict[str, MethodCell] = {}
    for label in labels:
        mean, low, high = hierarchical_bootstrap_ci(groups[label])
        cells[label] = MethodCell(label, mean, low, high, len(listeners), len(eps))
    pairs = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            first, second = (a, b) if cells[a].mean >= cells[b].mean else (b, a)
            pairs.append(compare_pair(groups[first], groups[second], (first, second)))
    adjusted = holm([p.p_value for p in pairs])
    pairs = [p.with_holm(q) for p, q in zip(pairs, adjusted)]

    def p_holm(x: str, y: str) -> PairComparison:
        return next(p for p in pairs if {p.a, p.b} == {x, y})

    ranked = _ranked(labels, data)
    best = max(ranked, key=lambda x: (cells[x].mean, x)) if ranked else None
    ref = _reference(labels, data)
    for label in labels:
        c = cells[label]
        updates: dict[str, object] = {"best": label == best}
        if ref and label != ref:
            pc = p_holm(label, ref)
            if pc.p_holm <= alpha:
                updates["vs_reference"] = "▲" if c.mean > cells[ref].mean else "▼"
        if best and label != best and label in ranked:
            updates["worse_than_best"] = p_holm(label, best).p_holm <= alpha
        cells[label] = dataclasses.replace(c, **updates)

    result, note = None, ""
    if len(ranked) < 3:
        note = f"Friedman test over listeners not run: it needs at least 3 ranked methods ({len(ranked)} here)."
    elif len(listeners) < 2:
        note = "Friedman test over listeners not run: it needs at least 2 listeners."
    else:
        scores = np.array([[float(np.mean(groups[m][i])) for m in ranked] for i in range(len(listeners))])
        result = friedman(scores, ranked, alpha=alpha)
    listener_scores = {m: [float(np.mean(g)) for g in groups[m]] for m in labels}
    return CellAnalysis(key, cells, pairs, result, note, listener_scores)


def analyse(data: ComparisonData, alpha: float = ALPHA) -> Analysis:
    """All statistics of the report."""
    cells = [analyse_cell(data, key, alpha) for key in data.cell_keys()]
    ranked = sorted({m for c in cells for m in _ranked(list(c.methods), data)})
    blocks = [c for c in cells if all(m in c.methods for m in ranked)]
    overall, note, scores = None, "", None
    if len(ranked) < 3:
        note = (f"Friedman test across cells not run: it needs at least 3 ranked methods ({len(ranked)} here). "
                "With two methods, read the paired tests of each cell.")
    elif len(blocks) < 2:
        note = (f"Friedman test across cells not run: it needs at least 2 cells (task × scenario × K) in which "
                f"all {len(ranked)} methods were run ({len(blocks)} here).")
    else:
        scores = np.array([[c.methods[m].mean for m in ranked] for c in blocks])
        overall = friedman(scores, ranked, alpha=alpha)
    return Analysis(data, alpha, cells, overall, note, [c.key for c in blocks], scores)


# --------------------------------------------------------------------------- rendering


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    align_left: int = 1  # number of leading left-aligned columns


@dataclass
class Figure:
    name: str  # file name under figures/
    png: bytes
    caption: str


Block = tuple[str, object]  # ("h1"|"h2"|"h3"|"p"|"table"|"figure"|"code", payload)


def _png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")  # type: ignore[attr-defined]
    return buf.getvalue()


def _f(x: float) -> str:
    return f"{x:.3f}"


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _peq(p: float) -> str:
    """``p`` for running text: "= 0.018" or "< 0.001"."""
    text = _p(p)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"


def _num(x: float) -> str:
    return "∞" if np.isinf(x) else f"{x:.3f}"


def _friedman_text(res: FriedmanResult, blocks: str) -> str:
    order = np.argsort(res.avg_ranks, kind="stable")
    ranks = ", ".join(f"{res.methods[i]} {res.avg_ranks[i]:.3f}" for i in order)
    verdict = ("the methods differ (p ≤ α)" if res.p_value <= res.alpha
               else "no significant difference among the methods (p > α)")
    groups = "; ".join("{" + ", ".join(res.methods[i] for i in g) + "}" for g in res.groups) or "none"
    return (f"Friedman over {res.n_blocks} {blocks}, k = {len(res.methods)} methods: χ²_F = {res.chi2:.3f}, "
            f"p {_peq(res.p_value)}; Iman–Davenport F_F = {_num(res.iman_davenport)} with ({res.df1}, {res.df2}) df, "
            f"p {_peq(res.iman_davenport_p)} — {verdict}. Average ranks (1 = best): {ranks}. "
            f"Nemenyi critical difference at α = {res.alpha}: q_α = {res.q_alpha:.3f}, CD = {res.cd:.3f}; "
            f"groups not significantly different: {groups}.")


def _slug(*parts: object) -> str:
    return "-".join("".join(ch if ch.isalnum() else "_" for ch in str(p)) for p in parts)


def build_blocks(an: Analysis) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and to HTML alike."""
    from perserbench import plots

    data, alpha = an.data, an.alpha
    metric = data.metric
    blocks: list[Block] = [("h1", "perserbench comparison report")]
    seeds = ", ".join(f"{m.label}: {sorted(m.seeds)}" for m in data.methods.values())
    blocks.append(("p", f"Metric: {metric}. Methods (seeds): {seeds}. Tasks: "
                        + ", ".join(f"{t} (split hash {h})" for t, h in data.tasks.items())
                        + f". {len(data.files)} result file(s). Seeds are averaged within each listener-episode."))
    blocks.append(("p", (f"Unit of analysis: the test listener (mean over its episodes). Cells: mean over listeners "
                        f"[95% hierarchical-bootstrap CI]. Bold: best ranked method of the column. "
                        f"▲/▼: significantly better/worse than {REFERENCE}; †: significantly worse than the "
                        f"column's best (two-sided Wilcoxon signed-rank over listeners, Holm-adjusted over all "
                        f"pairs of the cell, α = {alpha}). {', '.join(CEILINGS)} is a ceiling, never marked best "
                        "or ranked. See docs/reading-the-report.md.")))
    for task in data.tasks:
        tcells = [c for c in an.cells if c.key[0] == task]
        labels = sorted({m for c in tcells for m in c.methods})
        blocks.append(("h2", f"Summary — {task}"))
        table = Table(["method"] + [f"{c.key[1]} K={c.key[2]}" for c in tcells], [])
        for r, label in enumerate(labels):
            row = [label]
            for j, c in enumerate(tcells):
                mc = c.methods.get(label)
                if mc is None:
                    row.append("—")
                    continue
                row.append(f"{_f(mc.mean)} [{_f(mc.ci_low)}, {_f(mc.ci_high)}]" + (f" {mc.marks}" if mc.marks else ""))
                if mc.best:
                    table.bold.add((r, j + 1))
            table.rows.append(row)
        blocks.append(("table", table))
        for scenario in sorted({c.key[1] for c in tcells}):
            series = {}
            for label in labels:
                pts = [(c.key[2], c.methods[label]) for c in tcells if c.key[1] == scenario and label in c.methods]
                if pts:
                    series[label] = {"shots": [k for k, _ in pts], "mean": [m.mean for _, m in pts],
                                     "low": [m.ci_low for _, m in pts], "high": [m.ci_high for _, m in pts]}
            refs = [x for x in labels if data.methods[x].name in CEILINGS]
            fig = plots.shots_curve(series, title=f"{task} · {scenario}", ylabel=metric, reference=refs)
            blocks.append(("figure", Figure(f"shots-{_slug(task, scenario)}.png", _png(fig),
                                            f"{metric} versus K, {task} {scenario}; shaded: 95% CI.")))

    blocks.append(("h2", "Ranks across cells (Friedman / Nemenyi)"))
    if an.overall is None:
        blocks.append(("p", an.overall_note))
    else:
        cells_text = ", ".join(f"{t} {s} K={k}" for t, s, k in an.overall_blocks)
        blocks.append(("p", _friedman_text(an.overall, f"cells ({cells_text}; score = mean over listeners)")))
        fig = plots.cd_diagram(an.overall_scores, an.overall.methods,
                               title=f"all cells ({an.overall.n_blocks} blocks)", alpha=alpha)
        blocks.append(("figure", Figure("cd-overall.png", _png(fig),
                                        "Critical-difference diagram across cells: average rank per method "
                                        "(1 = best); methods joined by a bar are not significantly different "
                                        "(Nemenyi).")))

    for c in an.cells:
        blocks.append(("h2", f"Pairwise comparisons — {c.title}"))
        n = next(iter(c.methods.values()))
        blocks.append(("p", (f"{n.n_listeners} listeners, {n.n_episodes} episodes per method. Δ = A − B "
                            "(A is the method with the higher mean), paired over listeners; CI: hierarchical "
                            "bootstrap of the paired episode differences; r_rb: matched-pairs rank-biserial "
                            "correlation.")))
        table = Table(["A", "B", "mean A", "mean B", "Δ (A−B)", "95% CI of Δ", "W", "p (Wilcoxon)",
                       "p (permutation)", "p (Holm)", "r_rb"], [], align_left=2)
        for r, p in enumerate(c.pairs):
            table.rows.append([p.a, p.b, _f(p.mean_a), _f(p.mean_b), f"{p.mean_diff:+.3f}",
                               f"[{p.ci_low:+.3f}, {p.ci_high:+.3f}]", f"{p.wilcoxon_statistic:g}", _p(p.p_value),
                               _p(p.permutation_p), _p(p.p_holm), f"{p.effect_size:+.2f}"])
            if p.p_holm <= alpha:
                table.bold.add((r, 9))
        blocks.append(("table", table))
        if c.friedman is None:
            blocks.append(("p", c.friedman_note))
        else:
            blocks.append(("p", _friedman_text(c.friedman, "listeners")))
            scores = np.array([[c.listener_scores[m][i] for m in c.friedman.methods]
                               for i in range(c.friedman.n_blocks)])
            fig = plots.cd_diagram(scores, c.friedman.methods, title=f"{c.title} ({c.friedman.n_blocks} listeners)",
                                   alpha=alpha)
            blocks.append(("figure", Figure(f"cd-{_slug(*c.key)}.png", _png(fig),
                                            f"Critical-difference diagram over listeners, {c.title}.")))
    return blocks


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + str(payload), ""]
        elif kind == "p":
            out += [str(payload), ""]
        elif kind == "table":
            t: Table = payload  # type: ignore[assignment]
            out.append("| " + " | ".join(t.header) + " |")
            out.append("|" + "|".join(":---" if j < t.align_left else "---:" for j in range(len(t.header))) + "|")
            for r, row in enumerate(t.rows):
                cells = [f"**{v}**" if (r, j) in t.bold else v for j, v in enumerate(row)]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        elif kind == "figure":
            f: Figure = payload  # type: ignore[assignment]
            out += [f"![{f.caption}](figures/{f.name})", "", f"*{f.caption}*", ""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1b1f24;line-height:1.45}h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:1rem 0;font-variant-numeric:tabular-nums;display:block;overflow-x:auto;max-width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:.3rem .6rem;text-align:right;white-space:nowrap}
th{background:#eef1f4}.l{text-align:left}figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d8dee4}
figcaption{color:#57606a;font-size:.9rem}"""


def render_html(blocks: Sequence[Block]) -> str:
    """A self-contained page: figures are inlined as base64 PNG data URIs, no external files."""
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>perserbench comparison report</title>", f"<style>{_CSS}</style></head><body>"]
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(str(payload))}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(str(payload))}</p>")
        elif kind == "table":
            t: Table = payload  # type: ignore[assignment]
            head = "".join(f'<th class="l">{html.escape(h)}</th>' if j < t.align_left else f"<th>{html.escape(h)}</th>"
                           for j, h in enumerate(t.header))
            rows = []
            for r, row in enumerate(t.rows):
                tds = []
                for j, v in enumerate(row):
                    text = html.escape(v)
                    if (r, j) in t.bold:
                        text = f"<strong>{text}</strong>"
                    tds.append(f'<td class="l">{text}</td>' if j < t.align_left else f"<td>{text}</td>")
                rows.append("<tr>" + "".join(tds) + "</tr>")
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
        elif kind == "figure":
            f: Figure = payload  # type: ignore[assignment]
            uri = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(f.caption)}" src="{uri}">'
                       f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
    out += ["</body></html>", ""]
    return "\n".join(out)


def analysis_json(an: Analysis) -> str:
    """Machine-readable statistics of the report (report.json)."""
    def friedman_dict(res: FriedmanResult | None) -> dict | None:
        return None if res is None else res.to_dict()

    doc = {
        "metric": an.data.metric, "alpha": an.alpha, "files": an.data.files, "tasks": an.data.tasks,
        "seeds": {m.label: sorted(m.seeds) for m in an.data.methods.values()},
        "cells": [{"task": c.key[0], "scenario": c.key[1], "shots": c.key[2],
                   "methods": [dataclasses.asdict(m) for m in c.methods.values()],
                   "pairs": [dataclasses.asdict(p) for p in c.pairs],
                   "friedman": friedman_dict(c.friedman)} for c in an.cells],
        "overall": friedman_dict(an.overall),
        "overall_blocks": [list(k) for k in an.overall_blocks],
    }
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n"


def write_report(an: Analysis, out_dir: Path) -> list[Path]:
    """Render everything first, then write each file atomically (figures before the pages that
    reference them). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with plt.style.context("default"):
        blocks = build_blocks(an)
    texts = {"report.md": render_markdown(blocks), "report.html": render_html(blocks), "report.json": analysis_json(an)}
    out_dir = Path(out_dir)
    written = []
    for kind, payload in blocks:
        if kind == "figure":
            path = out_dir / "figures" / payload.name  # type: ignore[attr-defined]
            write_bytes_atomic(path, payload.png)  # type: ignore[attr-defined]
            written.append(path)
    for name, text in texts.items():
        write_atomic(out_dir / name, text)
        written.append(out_dir / name)
    return written
