"""The board as Markdown (``leaderboard/README.md``): per task, the ranked table, then the
ceiling / references, headroom captured and personalization gain, each its own table."""

from __future__ import annotations

from perserbench.formatting import fixed, p_value, share, signed, verdict
from perserbench.leaderboard.board import ALPHA, AcrossTasks, Board, Cell, CellKey, TaskBoard
from perserbench.leaderboard.paths import RESULTS_DIR
from perserbench.results import METRIC_LABELS, PRIMARY_METRIC, SECONDARY_METRIC
from perserbench.roles import BASELINE, CEILINGS
from perserbench.stats import NO_HARM_MARGIN

PRIMARY, SECONDARY = METRIC_LABELS[PRIMARY_METRIC], METRIC_LABELS[SECONDARY_METRIC]


def with_ci(cell: Cell) -> str:
    return f"{fixed(cell.mean)} [{fixed(cell.ci_low)}, {fixed(cell.ci_high)}]"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _rule(left: int, right: int, trailing_left: int = 0) -> str:
    return "|" + "|".join([":---"] * left + ["---:"] * right + [":---"] * trailing_left) + "|"


def _links(files: list[str]) -> str:
    return ", ".join(f"[{i + 1}]({RESULTS_DIR}/{f})" for i, f in enumerate(files))


def _headers(keys: list[CellKey]) -> list[str]:
    return [f"{s} K={k}" for s, k in keys]


def _ranked_table(task: TaskBoard, keys: list[CellKey]) -> list[str]:
    lines = [_row(["Rank", "Method", *_headers(keys), "Result", "perserbench"]),
             "|" + "|".join(["---:", ":---"] + ["---:"] * len(keys) + [":---", ":---"]) + "|"]
    for rank, method, _ in task.overall():
        values = []
        for key in keys:
            cell = task.ranked.get(key, {}).get(method)
            comp = task.comparisons.get(key, {}).get(method)
            values.append("—" if cell is None else with_ci(cell) + (f" {comp.marker}" if comp and comp.marker else ""))
        lines.append(_row(["—" if rank is None else str(rank), method, *values, _links(task.files(method)),
                           ", ".join(task.versions(method))]))
    return lines


def _references_table(task: TaskBoard, keys: list[CellKey]) -> list[str]:
    lines = [_row(["Reference", *_headers(keys), "Result", "perserbench"]), _rule(1, len(keys), 2)]
    for method in task.methods("reference"):
        values = [with_ci(c) if (c := task.references.get(key, {}).get(method)) else "—" for key in keys]
        lines.append(_row([method, *values, _links(task.files(method, "reference")),
                           ", ".join(task.versions(method, "reference"))]))
    return lines


def _headroom_table(task: TaskBoard, keys: list[CellKey]) -> list[str]:
    lines = [_row(["Method", "Ceiling", *_headers(keys)]), _rule(2, len(keys))]
    for method in task.methods():
        if method == BASELINE:
            continue
        for ceiling in task.ceilings:
            values = [share(task.headroom.get(key, {}).get(method, {}).get(ceiling)) for key in keys]
            lines.append(_row([method, ceiling, *values]))
    return lines


def _gain_table(task: TaskBoard, keys: list[CellKey]) -> list[str]:
    lines = [_row(["Method", *_headers(keys), "Control result"]), _rule(1, len(keys), 1)]
    for method in task.methods("control"):
        values = []
        for key in keys:
            gain = task.gains.get(key, {}).get(method)
            values.append("—" if gain is None else f"{signed(gain.delta)} {gain.marker}".strip())
        lines.append(_row([method, *values, _links(task.files(method, "control"))]))
    return lines


def _secondary_table(task: TaskBoard, keys: list[CellKey]) -> list[str]:
    lines = [_row(["Method", *_headers(keys)]), _rule(1, len(keys))]
    for _, method, _ in task.overall():
        lines.append(_row([method, *(fixed(c.secondary) if (c := task.ranked.get(key, {}).get(method)) else "—"
                                     for key in keys)]))
    return lines


def _no_harm_table(task: TaskBoard, keys: list[CellKey]) -> list[str]:
    lines = [_row(["Method", *_headers(keys), "all cells", "90% CI (all cells)"]), _rule(1, len(keys) + 2)]
    for method in task.methods():
        if method == BASELINE:
            continue
        overall = task.no_harm_task.get(method)
        ci = "—" if overall is None else f"[{overall.ci_low:+.3f}, {overall.ci_high:+.3f}]"
        lines.append(_row([method, *(verdict(task.no_harm.get(key, {}).get(method)) for key in keys),
                           f"**{verdict(overall)}**", ci]))
    return lines


NO_HARM_TEXT = (f"**Do no harm** — each method − `{BASELINE}` per test listener, TOST equivalence test with margin "
                f"±{NO_HARM_MARGIN} (α = {ALPHA}): *no harm* = shown equivalent or significantly better, *harmful* = "
                "significantly worse, *inconclusive* = neither (with the power of the equivalence test). All cells: "
                "each listener's difference averaged over the cells of the task.")


def _uniform_summary(board: Board) -> list[str]:
    """One table of the task-level verdicts on the uniform controls (one per generator)."""
    uniform = [t for t in board.tasks.values() if t.uniform and t.no_harm_task]
    if not uniform:
        return []
    methods = sorted({m for t in uniform for m in t.no_harm_task})
    lines = ["## Do no harm on the uniform controls", "",
             ("On a uniform control every listener perceives alike, so personalization cannot help and an adaptive "
              f"method should score what `{BASELINE}` scores. " + NO_HARM_TEXT.split(" — ", 1)[1]), "",
             _row(["Method", *(t.name for t in uniform)]), _rule(1, len(uniform))]
    for method in methods:
        lines.append(_row([method, *(verdict(t.no_harm_task.get(method)) for t in uniform)]))
    return lines + [""]


def _across_tasks(across: AcrossTasks | None) -> list[str]:
    if across is None or not across.blocks:
        return []
    lines = ["## Across tasks", "",
             (f"Friedman test over independent blocks: the tasks that are not uniform controls "
              f"({', '.join(across.blocks)}), each method scored by its mean {PRIMARY} over the task's cells; "
              "the cells of one task share their listeners and episodes, so they are never blocks."), ""]
    if across.result is None:
        return lines + [across.note, ""]
    res = across.result
    order = sorted(range(len(res.methods)), key=lambda j: (res.avg_ranks[j], res.methods[j]))
    lines += [(f"{res.n_blocks} blocks, {len(res.methods)} methods: χ²_F = {res.chi2:.3f}, p = {p_value(res.p_value)}; "
               f"Iman–Davenport p = {p_value(res.iman_davenport_p)}; Nemenyi CD = {res.cd:.3f} (α = {res.alpha})."),
              "", _row(["Method", "average rank", *across.blocks]), _rule(1, 1 + len(across.blocks))]
    for j in order:
        lines.append(_row([res.methods[j], f"{res.avg_ranks[j]:.2f}",
                           *(fixed(across.scores[b][j]) for b in range(len(across.blocks)))]))
    return lines + [""]


def _task_tables(task: TaskBoard) -> list[str]:
    keys = task.cell_keys
    lines = _ranked_table(task, keys) + [""]
    if task.ranked:
        lines += [f"**{SECONDARY}** (secondary metric, mean over test listeners):", ""]
        lines += _secondary_table(task, keys) + [""]
    if task.references:
        lines += ["**Ceiling / references** (not ranked):", ""] + _references_table(task, keys) + [""]
    if task.ceilings and any(task.headroom.values()):
        lines += [("**Headroom captured** — (method − consensus) / (ceiling − consensus); 100% = at the ceiling, "
                  "— where the ceiling is not above consensus:"), ""] + _headroom_table(task, keys) + [""]
    if task.controls:
        lines += [(f"**Personalization gain** — own support − other-listener control, paired over test listeners "
                  f"(▲/▼: Wilcoxon, Holm-adjusted over the methods of the cell, α = {ALPHA}):"), ""]
        lines += _gain_table(task, keys) + [""]
    if any(task.no_harm.values()):
        lines += [NO_HARM_TEXT, ""] + _no_harm_table(task, keys) + [""]
    return lines


def _pooled_section(board: Board, pooled: TaskBoard) -> list[str]:
    """The board task pooled with its replicate draws, then each draw's mean over cells."""
    listeners = max((c.n_listeners for cells in pooled.ranked.values() for c in cells.values()), default=0)
    lines = [f"### {pooled.name}: {len(pooled.draws)} corpus draws pooled", "",
             (f"The task above and its replicates ({', '.join(f'`{d}`' for d in pooled.draws[1:])}): the same protocol "
              f"on other corpus seeds, so other listeners and utterances. Every cell pools the draws' test listeners "
              f"(up to {listeners}) as one sample — mean, bootstrap CI, ▲/▼ and headroom are computed over all of "
              "them, exactly as for one task; a method is pooled in a cell only where every draw has it. Split "
              f"hashes: `{pooled.hash}`."), ""]
    lines += _task_tables(pooled)
    lines += [f"**Each draw** — mean {PRIMARY} over the task's cells (the spread is how much one draw can say):", "",
              *_draws_table(board, pooled), ""]
    return lines


def _draws_table(board: Board, pooled: TaskBoard) -> list[str]:
    means = {name: {m: mean for _, m, mean in board.tasks[name].overall()} for name in pooled.draws}
    lines = [_row(["Method", *pooled.draws]), _rule(1, len(pooled.draws))]
    for _, method, _ in pooled.overall():
        lines.append(_row([method, *("—" if (v := means[name].get(method)) is None else fixed(v)
                                     for name in pooled.draws)]))
    return lines


def render_markdown(board: Board) -> str:
    lines = [
        "# perserbench leaderboard",
        "",
        ("Generated by `perserbench leaderboard build` from the result files in [`results/`](results/) "
         "only; CI runs `perserbench leaderboard build --check`, which fails when a result file is "
         "invalid or this page is stale. An interactive version with plots is in `index.html`."),
        "",
        (f"Cells: {PRIMARY} (mean over test listeners) with its 95% bootstrap CI; the {SECONDARY} is shown "
         "beside it (docs/metrics.md says why this one is primary). "
         f"▲/▼: significantly better/worse than `{BASELINE}` (paired over test listeners, "
         f"Holm-adjusted over the methods of the cell, α = {ALPHA}). Rank: by mean {PRIMARY} over all "
         "cells of the task; methods without every cell are listed unranked. Every ranked result passed "
         "the runner's independence audit, and none lies above the oracle ceiling's upper bound. "
         f"References ({', '.join(f'`{c}`' for c in CEILINGS)}) used privileged information: they are "
         "shown as ceilings, never ranked or tested. Headroom captured = (method − consensus) / "
         "(ceiling − consensus). Personalization gain = score with the listener's own support − score "
         "with another test listener's support (the other-listener control), paired over listeners."),
        "",
    ]
    if not board.tasks:
        lines += ["No results yet. Add one with `perserbench leaderboard submit RESULT.json`.", ""]
    lines += _uniform_summary(board)
    for task in board.tasks.values():
        if board.is_pooled_draw(task):
            continue  # read through its board task's pooled section (its files are linked there)
        kind = " A uniform control: personalization cannot help here." if task.uniform else ""
        lines += [f"## {task.name}", "", f"Task version {task.version}, split hash `{task.hash}`.{kind}", ""]
        lines += _task_tables(task)
        if task.name in board.pooled:
            lines += _pooled_section(board, board.pooled[task.name])
    lines += _across_tasks(board.across)
    lines += ["## Submitting", "",
              ("Run your method with `perserbench run --method NAME --task TASK --out runs`, then "
               "`perserbench leaderboard submit runs/<file>.json` and `perserbench leaderboard build`, "
               "and commit `leaderboard/`. See `docs/add-your-method.md`."), ""]
    return "\n".join(lines)
