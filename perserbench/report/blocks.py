"""The report's content as a list of blocks (headings, paragraphs, tables, figures), written
once and rendered alike to Markdown and HTML by :mod:`perserbench.report.pages`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from perserbench.formatting import fixed, p_value, share, signed, verdict
from perserbench.report.analysis import Analysis, CellAnalysis, MethodCell, is_uniform_control
from perserbench.results import METRIC_LABELS, POOLED_METRIC, PRIMARY_METRIC, SECONDARY_METRIC
from perserbench.roles import BASELINE, CEILINGS
from perserbench.stats import NO_HARM_MARGIN, FriedmanResult, PairComparison


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


Block = tuple[str, object]  # ("h1"|"h2"|"h3"|"p"|"table"|"figure", payload)


def _with_ci(m: MethodCell) -> str:
    return f"{fixed(m.mean)} [{fixed(m.ci_low)}, {fixed(m.ci_high)}]"


def _peq(p: float) -> str:
    """``p`` for running text: "= 0.018" or "< 0.001"."""
    text = p_value(p)
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


def _pair_table(pairs: list[PairComparison], alpha: float, a: str = "A", b: str = "B") -> Table:
    table = Table([a, b, f"mean {a}", f"mean {b}", f"Δ ({a}−{b})", "95% CI of Δ", "W", "p (Wilcoxon)",
                   "p (permutation)", "p (Holm)", "r_rb"], [], align_left=2)
    for r, p in enumerate(pairs):
        table.rows.append([p.a, p.b, fixed(p.mean_a), fixed(p.mean_b), signed(p.mean_diff),
                           f"[{p.ci_low:+.3f}, {p.ci_high:+.3f}]", f"{p.wilcoxon_statistic:g}", p_value(p.p_value),
                           p_value(p.permutation_p), p_value(p.p_holm), f"{p.effect_size:+.2f}"])
        if p.p_holm <= alpha:
            table.bold.add((r, 9))
    return table


def _by_cell(tcells: list[CellAnalysis], labels: list[str], value: Callable[[CellAnalysis, str], str | None]) -> Table:
    """One row per label, one column per cell of a task; ``value(cell, label)`` → text or None."""
    table = Table(["method"] + [f"{c.key[1]} K={c.key[2]}" for c in tcells], [])
    for label in labels:
        table.rows.append([label] + [value(c, label) or "—" for c in tcells])
    return table


def _task_blocks(an: Analysis, task: str) -> list[Block]:
    from perserbench import plots

    data, alpha = an.data, an.alpha
    tcells = [c for c in an.cells if c.key[0] == task]
    in_task = sorted({m for c in tcells for m in c.methods})
    ranked = [x for x in in_task if data.methods[x].role == "ranked"]
    references = [x for x in in_task if data.methods[x].role == "reference"]
    blocks: list[Block] = [("h2", f"Summary — {task}")]
    table = _by_cell(tcells, ranked, lambda c, x: (_with_ci(m) + (f" {m.marks}" if m.marks else ""))
                     if (m := c.methods.get(x)) else None)
    for r, label in enumerate(ranked):
        table.bold |= {(r, j + 1) for j, c in enumerate(tcells) if label in c.methods and c.methods[label].best}
    blocks.append(("table", table))
    if references:
        blocks += [("h3", f"Ceiling / references — {task}"),
                   ("p", ("Privileged information (true listener model, the listener's own many-shot labels): shown "
                         "as ceilings, never ranked, marked or tested.")),
                   ("table", _by_cell(tcells, references, lambda c, x: _with_ci(m) if (m := c.methods.get(x)) else None))]
    ceilings = [x for x in references if data.methods[x].name in CEILINGS]
    rows = [(x, ceiling) for x in ranked for ceiling in ceilings
            if any(ceiling in c.methods[x].headroom for c in tcells if x in c.methods)]
    if rows:
        table = Table(["method", "ceiling"] + [f"{c.key[1]} K={c.key[2]}" for c in tcells], [], align_left=2)
        for x, ceiling in rows:
            table.rows.append([x, ceiling] + [share(c.methods[x].headroom.get(ceiling)) if x in c.methods else "—"
                                              for c in tcells])
        blocks += [("h3", f"Headroom captured — {task}"),
                   ("p", (f"(method − {BASELINE}) / (ceiling − {BASELINE}) of the cell means: 0% = no better than "
                         f"{BASELINE}, 100% = at the ceiling; — where the ceiling is not above {BASELINE}.")),
                   ("table", table)]
    owners = sorted({g.a for c in tcells for g in c.gains})
    if owners:
        def gain(c: CellAnalysis, x: str) -> str | None:
            g = next((g for g in c.gains if g.a == x), None)
            mark = "" if g is None or g.p_holm > alpha else (" ▲" if g.mean_diff > 0 else " ▼")
            return None if g is None else f"{signed(g.mean_diff)} [{g.ci_low:+.3f}, {g.ci_high:+.3f}]{mark}"

        blocks += [("h3", f"Personalization gain — {task}"),
                   ("p", ("Score with the listener's own support − score with another test listener's support (the "
                         "other-listener control), paired over listeners [95% CI]; ▲/▼: Wilcoxon signed-rank, "
                         f"Holm-adjusted over the methods of the cell, α = {alpha}. What remains under the control "
                         "is domain adaptation, not personalization.")),
                   ("table", _by_cell(tcells, owners, gain))]
    verdicts = an.no_harm.get(task, {})
    if verdicts:
        table = _by_cell(tcells, sorted(verdicts), lambda c, x: verdict(m.no_harm) if (m := c.methods.get(x)) else None)
        table.header.append("all cells")
        for row, label in zip(table.rows, sorted(verdicts)):
            row.append(verdict(verdicts[label]))
        uniform = (" This is a uniform control: personalization cannot help, so an adaptive method should score what "
                   f"{BASELINE} scores." if is_uniform_control(task) else "")
        blocks += [("h3", f"Do no harm — {task}"),
                   ("p", (f"Each ranked method − {BASELINE} per listener, TOST equivalence test with margin "
                          f"±{NO_HARM_MARGIN} (α = {alpha}): no harm = shown equivalent or significantly better; "
                          "harmful = significantly worse; inconclusive = neither, shown with the power of the "
                          "equivalence test. All cells: each listener's difference averaged over the task's cells "
                          f"(they share listeners).{uniform}")),
                   ("table", table)]
    for scenario in sorted({c.key[1] for c in tcells}):
        series = {}
        for label in ranked + references:
            pts = [(c.key[2], c.methods[label]) for c in tcells if c.key[1] == scenario and label in c.methods]
            if pts:
                series[label] = {"shots": [k for k, _ in pts], "mean": [m.mean for _, m in pts],
                                 "low": [m.ci_low for _, m in pts], "high": [m.ci_high for _, m in pts]}
        fig = plots.shots_curve(series, title=f"{task} · {scenario}", ylabel=data.metric, reference=references)
        blocks.append(("figure", Figure(f"shots-{_slug(task, scenario)}.png", plots.to_png(fig),
                                        f"{data.metric} versus K, {task} {scenario}; shaded: 95% CI; references "
                                        "dashed.")))
    return blocks


def _overall_blocks(an: Analysis) -> list[Block]:
    from perserbench import plots

    blocks: list[Block] = [("h2", "Ranks across tasks (Friedman / Nemenyi)")]
    if an.overall is None or an.overall_scores is None:
        return blocks + [("p", an.overall_note)]
    used = "; ".join(f"{t}: mean over {', '.join(f'{s} K={k}' for _, s, k in keys)}"
                     for t, keys in an.overall_blocks.items())
    blocks.append(("p", _friedman_text(an.overall, f"tasks ({used}; each cell scored by its mean over listeners)")))
    fig = plots.cd_diagram(an.overall_scores, an.overall.methods, title=f"all tasks ({an.overall.n_blocks} blocks)",
                           alpha=an.alpha)
    blocks.append(("figure", Figure("cd-overall.png", plots.to_png(fig),
                                    "Critical-difference diagram across tasks: average rank per method (1 = best); "
                                    "methods joined by a bar are not significantly different (Nemenyi).")))
    return blocks


def _cell_blocks(an: Analysis, c: CellAnalysis) -> list[Block]:
    from perserbench import plots

    n = next(iter(c.methods.values()))
    blocks: list[Block] = [
        ("h2", f"Pairwise comparisons — {c.title}"),
        ("p", (f"{n.n_listeners} listeners, {n.n_episodes} episodes per method. Ranked methods only. Δ = A − B "
               "(A is the method with the higher mean), paired over listeners; CI: hierarchical bootstrap of the "
               "paired episode differences; r_rb: matched-pairs rank-biserial correlation.")),
        ("table", _pair_table(c.pairs, an.alpha)),
    ]
    if c.gains:
        blocks += [("h3", f"Personalization gain — {c.title}"),
                   ("table", _pair_table(c.gains, an.alpha, "own", "control"))]
    if c.friedman is None:
        return blocks + [("p", c.friedman_note)]
    blocks.append(("p", _friedman_text(c.friedman, "listeners")))
    scores = np.array([[c.listener_scores[m][i] for m in c.friedman.methods] for i in range(c.friedman.n_blocks)])
    fig = plots.cd_diagram(scores, c.friedman.methods, title=f"{c.title} ({c.friedman.n_blocks} listeners)",
                           alpha=an.alpha)
    blocks.append(("figure", Figure(f"cd-{_slug(*c.key)}.png", plots.to_png(fig),
                                    f"Critical-difference diagram over listeners, {c.title}.")))
    return blocks


def build_blocks(an: Analysis) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and to HTML alike."""
    data, alpha = an.data, an.alpha
    blocks: list[Block] = [("h1", "perserbench comparison report")]
    seeds = ", ".join(f"{m.label}: {sorted(m.seeds)}" for m in data.methods.values())
    chosen = {PRIMARY_METRIC: "the primary metric", SECONDARY_METRIC: "the secondary metric"}.get(data.metric, "")
    metric = f"{METRIC_LABELS[data.metric]} ({data.metric}{', ' + chosen if chosen else ''}; docs/metrics.md)"
    unit = ("its class counts pooled over its episodes and seeds" if data.metric == POOLED_METRIC
            else "mean over its episodes")
    blocks.append(("p", f"Metric: {metric}. Methods (seeds): {seeds}. Tasks: "
                        + ", ".join(f"{t} (split hash {h})" for t, h in data.tasks.items())
                        + f". {len(data.files)} result file(s). Seeds are averaged within each listener-episode."))
    blocks.append(("p", (f"Unit of analysis: the test listener ({unit}). Cells: mean over listeners "
                         f"[95% bootstrap CI, listeners then episodes]. Bold: best ranked method of the column. "
                         f"▲/▼: significantly better/worse than {BASELINE}; †: significantly worse than the "
                         f"column's best (two-sided Wilcoxon signed-rank over listeners, Holm-adjusted over all "
                         f"pairs of ranked methods in the cell, α = {alpha}). References ({', '.join(CEILINGS)}) and "
                         "other-listener controls are shown apart and never ranked, marked or tested against the "
                         "ranked methods. See docs/reading-the-report.md.")))
    for task in data.tasks:
        blocks += _task_blocks(an, task)
    blocks += _overall_blocks(an)
    for c in an.cells:
        blocks += _cell_blocks(an, c)
    return blocks
