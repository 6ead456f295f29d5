"""The board as one self-contained HTML page (``leaderboard/index.html``): task / scenario / K
selectors, per cell a sortable table of the ranked methods, the ceiling / references and the
personalization gains, a critical-difference diagram, and score-vs-shots curves. The CSS and
JavaScript are inline and figures are PNG data URIs, so the page needs no other file."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from perserbench.formatting import fixed, p_value, share, signed, verdict
from perserbench.leaderboard.board import ALPHA, Board, Cell, CellKey, TaskBoard
from perserbench.leaderboard.figures import cd_figure_uri, shots_figure_uri
from perserbench.leaderboard.paths import RESULTS_DIR
from perserbench.results import METRIC_LABELS, PRIMARY_METRIC, SECONDARY_METRIC
from perserbench.roles import BASELINE
from perserbench.stats import NO_HARM_MARGIN, EquivalenceTest

PRIMARY, SECONDARY = METRIC_LABELS[PRIMARY_METRIC], METRIC_LABELS[SECONDARY_METRIC]

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
td.l,th.l{text-align:left}.scroll{overflow-x:auto;margin:1rem 0}.scroll table{margin:0}
h4{margin:.8rem 0 .2rem;font-size:1rem}.up{color:#1a7f37;font-weight:600}.down{color:#cf222e;font-weight:600}
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


def _num(value: float) -> str:
    return _td(fixed(value), f"{value:.12f}")


def _table(head: list[str], left: set[str], rows: list[str]) -> str:
    """A sortable table that scrolls sideways instead of overflowing a narrow page."""
    return ('<div class="scroll"><table class="sortable"><thead><tr>'
            + "".join(f'<th class="l">{h}</th>' if h in left else f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _link(cell: Cell) -> str:
    """A link to the result file, shown as the method's config hash; the full name on hover.
    A cell pooled over corpus draws links each draw's file, numbered."""
    if cell.pooled_from:
        links = " ".join(f'<a href="{RESULTS_DIR}/{html.escape(f)}" title="{html.escape(f)}">{i + 1}</a>'
                         for i, f in enumerate(cell.pooled_from))
        return _td(f"{html.escape(cell.config_hash[:8])} ({links})", cell.pooled_from[0], "l")
    name = html.escape(cell.file)
    return _td(f'<a href="{RESULTS_DIR}/{name}" title="{name}">{html.escape(cell.config_hash[:8])}</a>', cell.file, "l")


def _tested(comp: Any) -> str:
    """Δ and Holm-adjusted p of a paired comparison, coloured by its significance mark."""
    if comp is None:
        return _td("—", "") + _td("—", 2.0)
    css = {"▲": "up", "▼": "down"}.get(comp.marker, "")
    return (_td(f"{signed(comp.delta)} {comp.marker}".strip(), f"{comp.delta:.12f}", css)
            + _td(p_value(comp.p_adjusted), f"{comp.p_adjusted:.12f}"))


def _scores(cell: Cell) -> str:
    return (_num(cell.mean) + _td(f"[{fixed(cell.ci_low)}, {fixed(cell.ci_high)}]", f"{cell.ci_low:.12f}"))


def _details(cell: Cell) -> str:
    return (_num(cell.secondary) + _num(cell.micro_f1) + _num(cell.top1) + _td(str(cell.n_listeners), cell.n_listeners)
            + _td(str(cell.n_episodes), cell.n_episodes) + _link(cell)
            + _td(html.escape(cell.version), cell.version, "l"))


def _ranked_table(task: TaskBoard, key: CellKey) -> str:
    references = task.references.get(key, {})
    ceilings = [c for c in task.ceilings if c in references] if BASELINE in task.ranked.get(key, {}) else []
    head = (["Rank", "Method", PRIMARY, "95% CI", f"Δ vs {BASELINE}", "p (Holm)"]
            + [f"headroom ({c})" for c in ceilings] + [SECONDARY, "micro-F1", "top-1", "listeners", "episodes",
                                                        "result", "perserbench"])
    comparisons, headroom = task.comparisons.get(key, {}), task.headroom.get(key, {})
    rows = []
    for rank, cell in task.cell_ranking(key):
        tested = (_td("baseline", 0.0) + _td("—", 2.0)) if cell.method == BASELINE else \
            _tested(comparisons.get(cell.method))
        shares = "".join(_td(share(h), "" if h is None else f"{h:.12f}")
                         for h in (headroom.get(cell.method, {}).get(c) for c in ceilings))
        rows.append("<tr>" + _td(str(rank), rank) + _td(html.escape(cell.method), cell.method, "l") + _scores(cell)
                    + tested + shares + _details(cell) + "</tr>")
    return _table(head, {"Method", "result", "perserbench"}, rows)


def _references_table(task: TaskBoard, key: CellKey) -> str:
    head = ["Reference", PRIMARY, "95% CI", SECONDARY, "micro-F1", "top-1", "listeners", "episodes", "result",
            "perserbench"]
    rows = ["<tr>" + _td(html.escape(m), m, "l") + _scores(c) + _details(c) + "</tr>"
            for m, c in sorted(task.references.get(key, {}).items())]
    return _table(head, {"Reference", "result", "perserbench"}, rows)


def _gain_table(task: TaskBoard, key: CellKey) -> str:
    head = ["Method", "own support", "other-listener control", "gain", "p (Holm)", "listeners", "control result"]
    own, controls, gains = task.ranked.get(key, {}), task.controls.get(key, {}), task.gains.get(key, {})
    rows = []
    for method, control in sorted(controls.items()):
        mine = own.get(method)
        rows.append("<tr>" + _td(html.escape(method), method, "l")
                    + (_num(mine.mean) if mine else _td("—", "")) + _num(control.mean)
                    + _tested(gains.get(method)) + _td(str(control.n_listeners), control.n_listeners)
                    + _link(control) + "</tr>")
    return _table(head, {"Method", "control result"}, rows)


def _verdict_cells(test: EquivalenceTest | None) -> str:
    if test is None:
        return _td("—", "") + _td("—", "") + _td("—", "") + _td("—", "")
    css = {"no harm": "up", "harmful": "down"}.get(test.verdict, "")
    return (_td(html.escape(test.verdict), test.verdict, f"l {css}") + _td(signed(test.mean), f"{test.mean:.12f}")
            + _td(f"[{test.ci_low:+.3f}, {test.ci_high:+.3f}]", f"{test.ci_low:.12f}")
            + _td(f"{100 * test.power:.0f}%", f"{test.power:.12f}"))


def _no_harm_table(tests: dict[str, EquivalenceTest | None]) -> str:
    head = ["Method", "verdict", f"Δ vs {BASELINE}", "90% CI", "power"]
    rows = ["<tr>" + _td(html.escape(m), m, "l") + _verdict_cells(t) + "</tr>" for m, t in sorted(tests.items())]
    return _table(head, {"Method", "verdict"}, rows)


_NO_HARM = (f"<small>(method − {BASELINE} per test listener, TOST with margin ±{NO_HARM_MARGIN}: no harm = "
            "equivalent or significantly better, harmful = significantly worse, inconclusive = neither; power of "
            "the equivalence test)</small>")


def _cell(task: TaskBoard, key: CellKey, active: bool) -> list[str]:
    on = " active" if active else ""
    parts = [f'<div class="cell{on}" data-scenario="{key[0]}" data-shots="{key[1]}"><h3>{key[0]}, K = {key[1]}</h3>',
             _ranked_table(task, key)]
    if task.references.get(key):
        parts += ["<h4>Ceiling / references <small>(privileged information: shown, never ranked)</small></h4>",
                  _references_table(task, key)]
    if task.controls.get(key):
        parts += [("<h4>Personalization gain <small>(own support − other-listener control, paired over test "
                  "listeners)</small></h4>"), _gain_table(task, key)]
    if task.no_harm.get(key):
        parts += [f"<h4>Do no harm, this cell {_NO_HARM}</h4>", _no_harm_table(task.no_harm[key])]
    uri = cd_figure_uri(task, key)
    if uri:
        parts.append(f'<figure><img alt="critical-difference diagram, {html.escape(task.title)} {key[0]} K={key[1]}" '
                     f'src="{uri}"><figcaption>Critical-difference diagram of the ranked methods (Friedman + Nemenyi '
                     "over test listeners): mean rank per method; methods joined by a bar are not significantly "
                     "different.</figcaption></figure>")
    else:
        parts.append('<p class="empty">Critical-difference diagram needs at least three ranked methods '
                     "with common test listeners.</p>")
    parts.append("</div>")
    return parts


_INTRO = ("<p>Listener-personalized speech emotion recognition. Built by <code>perserbench leaderboard "
          f"build</code> from the validated result files in <code>results/</code> only. {PRIMARY} is the mean "
          f"over test listeners with a 95% bootstrap CI (the {SECONDARY} beside it); Δ and p compare each ranked "
          "method with "
          f"<code>{BASELINE}</code>, paired over test listeners, Holm-adjusted within the cell "
          f"(▲/▼: significant at α = {ALPHA}). Every ranked result passed the runner's independence audit and "
          "none lies above the oracle ceiling. References (true listener model, many-shot personal labels) used "
          "privileged information and are never ranked; headroom captured = (method − consensus) / (ceiling − "
          "consensus); personalization gain = own support − other-listener control. Click a column header to "
          "sort.</p>")


def _across_html(board: Board) -> list[str]:
    """Sections that span tasks: the uniform controls' verdicts and the Friedman test over tasks."""
    parts = []
    uniform = [t for t in board.tasks.values() if t.uniform and t.no_harm_task]
    if uniform:
        methods = sorted({m for t in uniform for m in t.no_harm_task})
        rows = ["<tr>" + _td(html.escape(m), m, "l")
                + "".join(_td(html.escape(verdict(t.no_harm_task.get(m))), verdict(t.no_harm_task.get(m)), "l")
                          for t in uniform) + "</tr>" for m in methods]
        parts += [f"<h2>Do no harm on the uniform controls {_NO_HARM}</h2>",
                  _table(["Method", *(html.escape(t.name) for t in uniform)],
                         {"Method", *(html.escape(t.name) for t in uniform)}, rows)]
    across = board.across
    if across is not None and across.blocks:
        parts.append(f"<h2>Across tasks <small>(Friedman over the tasks that are not uniform controls: "
                     f"{html.escape(', '.join(across.blocks))}; mean {html.escape(PRIMARY)} over each task's "
                     "cells)</small></h2>")
        if across.result is None:
            parts.append(f'<p class="empty">{html.escape(across.note)}</p>')
        else:
            res = across.result
            parts.append(f"<p>χ²_F = {res.chi2:.3f}, p = {p_value(res.p_value)}; Iman–Davenport p = "
                         f"{p_value(res.iman_davenport_p)}; Nemenyi CD = {res.cd:.3f} (α = {res.alpha}).</p>")
            rows = ["<tr>" + _td(html.escape(m), m, "l") + _td(f"{r:.2f}", f"{r:.12f}")
                    + "".join(_num(across.scores[b][j]) for b in range(len(across.blocks))) + "</tr>"
                    for j, (m, r) in enumerate(zip(res.methods, res.avg_ranks))]
            parts.append(_table(["Method", "average rank", *(html.escape(b) for b in across.blocks)], {"Method"},
                                rows))
    return parts


def render_html(board: Board) -> str:
    # A replicate draw is shown through its task's pooled board (its files are linked there),
    # not as a page of its own: twelve more pages of figures would add megabytes and no reading.
    tasks = [shown for task in board.tasks.values() if not board.is_pooled_draw(task)
             for shown in (task, *([board.pooled[task.name]] if task.name in board.pooled else []))]
    scenarios = sorted({s for t in tasks for s in t.scenarios}, key=("seen", "unseen").index)
    shots = sorted({k for t in tasks for k in t.shots})
    default_scenario = "unseen" if "unseen" in scenarios else (scenarios[0] if scenarios else "")
    default_k = 5 if 5 in shots else (shots[0] if shots else "")

    def options(values: Iterable[Any], selected: Any) -> str:
        return "".join(f'<option value="{html.escape(str(v))}"{" selected" if v == selected else ""}>'
                       f"{html.escape(str(v))}</option>" for v in values)

    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>perserbench leaderboard</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>perserbench leaderboard</h1>", _INTRO]
    if not tasks:
        parts += ['<p class="empty">No results yet.</p>',
                  ('<select id="task" hidden></select><select id="scenario" hidden></select>'
                   '<select id="shots" hidden></select><p id="none"></p>')]
    else:
        parts.append('<div class="controls">'
                     f'<label>Task <select id="task">{options([t.title for t in tasks], tasks[0].title)}</select></label>'
                     f'<label>Scenario <select id="scenario">{options(scenarios, default_scenario)}</select></label>'
                     f'<label>K (shots) <select id="shots">{options(shots, default_k)}</select></label></div>')
        parts.append('<p id="none" class="empty" style="display:none">No results for this task, scenario and K.</p>')
    for i, task in enumerate(tasks):
        pooled = (f"<p>Pooled over the test listeners of {len(task.draws)} corpus draws "
                  f"({html.escape(', '.join(task.draws))}): the same protocol on other corpus seeds; a method is "
                  "pooled in a cell only where every draw has it.</p>") if task.draws else ""
        parts.append(f'<section class="task{" active" if i == 0 else ""}" data-task="{html.escape(task.title)}">'
                     f"<h2>{html.escape(task.title)} <small>task version {html.escape(task.version)}, split hash "
                     f"<code>{task.hash}</code></small></h2>{pooled}")
        for key in task.cell_keys:
            parts += _cell(task, key, i == 0 and key == (default_scenario, default_k))
        if task.no_harm_task:
            note = " — a uniform control: personalization cannot help here" if task.uniform else ""
            parts += [f"<h4>Do no harm, all cells of {html.escape(task.title)}{note} {_NO_HARM}</h4>",
                      _no_harm_table(task.no_harm_task)]
        for scenario in task.scenarios:
            uri = shots_figure_uri(task, scenario)
            if uri:
                on = " active" if i == 0 and scenario == default_scenario else ""
                parts.append(f'<figure class="curve{on}" data-scenario="{scenario}"><img alt="{html.escape(PRIMARY)} versus '
                             f'shots, {html.escape(task.title)} {scenario}" src="{uri}"><figcaption>{html.escape(PRIMARY)} versus K '
                             f"({scenario}), shaded: 95% CI; references dashed.</figcaption></figure>")
        parts.append("</section>")
    parts += _across_html(board)
    parts += [f"<script>{_JS}</script>", "</body></html>", ""]
    return "\n".join(parts)
