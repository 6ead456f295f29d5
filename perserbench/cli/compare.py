"""``perserbench compare``: statistical comparison report from result files (perserbench.report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from perserbench.cli import app
from perserbench.results import METRICS, PRIMARY_METRIC

console = Console()


def summary_table(an: object) -> Table:
    """Rich version of the report's summary, transposed to fit a terminal: one row per cell
    (task, scenario, K), one column per ranked method then per reference; mean with its
    marks, and the 95% CI to two decimals underneath (the report files carry three). Controls
    appear only as gains, in the report files."""
    from perserbench.report import Analysis
    from perserbench.roles import BASELINE

    assert isinstance(an, Analysis)
    table = Table(title=f"{an.data.metric}: mean over test listeners, 95% CI below\n"
                        f"(bold best; ▲/▼ vs {BASELINE}; † worse than best; Holm, α={an.alpha}; ref. = reference, "
                        "never ranked)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("cell", no_wrap=True)
    roles = {"ranked": "", "reference": " (ref.)"}
    columns = [(label, suffix) for role, suffix in roles.items()
               for label, m in an.data.methods.items() if m.role == role]
    for label, suffix in columns:
        table.add_column(label + suffix, justify="right", no_wrap=True)
    for c in an.cells:
        row = [f"{c.key[0]} {c.key[1]} K={c.key[2]}" if len(an.data.tasks) > 1 else f"{c.key[1]} K={c.key[2]}"]
        for label, _ in columns:
            mc = c.methods.get(label)
            if mc is None:
                row.append("—")
                continue
            head = f"{mc.mean:.3f}{mc.marks}"
            ci = f"[dim]{mc.ci_low:.2f}–{mc.ci_high:.2f}[/dim]".replace("0.", ".")
            row.append((f"[bold]{head}[/bold]" if mc.best else head) + "\n" + ci)
        table.add_row(*row)
    return table


@app.command("compare")
def compare_command(
    paths: Annotated[list[Path], typer.Argument(help="Result JSON files or directories holding them.")],
    metric: Annotated[str, typer.Option("--metric", help=f"{', '.join(METRICS)} (default: the primary metric).")] \
        = PRIMARY_METRIC,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.md, report.html, report.json, figures/.")] = Path("report"),
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level for marks and the critical difference.")] = 0.05,
) -> None:
    """Compare methods: paired tests over listeners, Holm, Friedman/Nemenyi, plots; writes a report."""
    from perserbench.api import compare
    from perserbench.errors import PerserbenchError
    from perserbench.outputs import check_output_dir

    if not 0.0 < alpha < 1.0:
        raise PerserbenchError(f"--alpha {alpha} must lie strictly between 0 and 1")
    check_output_dir(out)
    comparison = compare(paths, out, metric, alpha)
    an, written = comparison.analysis, comparison.written
    console.print(summary_table(an))
    if an.overall is not None:
        res = an.overall
        order = sorted(range(len(res.methods)), key=lambda i: res.avg_ranks[i])
        console.print(f"Friedman across {res.n_blocks} tasks: χ²_F = {res.chi2:.3f}, p = {res.p_value:.4g}; "
                      f"Iman–Davenport p = {res.iman_davenport_p:.4g}; CD = {res.cd:.3f}; ranks: "
                      + ", ".join(f"{res.methods[i]} {res.avg_ranks[i]:.2f}" for i in order))
    else:
        console.print(an.overall_note)
    console.print(f"wrote {out / 'report.md'}, {out / 'report.html'}, {out / 'report.json'} "
                  f"and {len(written) - 3} figure(s) in {out / 'figures'}")
