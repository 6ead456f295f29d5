"""``perserbench stats friedman|pair``: the statistics on any table of scores.

Input: a CSV with one row per block (a data set, a task cell, a listener) and one column per
method; a first column that is not numeric (or is headed ``block``, ``id``, ``dataset`` ...)
is taken as the block label, and a numeric first column that looks like block ids is refused
rather than ranked as a method (``--label-column`` / ``--no-label-column`` decide). This lets the
statistics be used, and checked against published examples, without result files.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from perserbench.cli import app
from perserbench.errors import PerserbenchError
from perserbench.inputs import read_text

console = Console()
stats_app = typer.Typer(help="Friedman/Nemenyi and paired tests on a CSV of scores (rows = blocks, columns = methods).",
                        no_args_is_help=True)
app.add_typer(stats_app, name="stats")


@dataclasses.dataclass
class ScoreTable:
    path: Path
    blocks: list[str]
    methods: list[str]
    scores: np.ndarray  # [blocks, methods]

    def column(self, name: str) -> np.ndarray:
        if name not in self.methods:
            raise PerserbenchError(f"{self.path}: no column {name!r}; columns are {', '.join(self.methods)}")
        return self.scores[:, self.methods.index(name)]


# Headers that name a column of block labels even when the labels are numbers (block ids).
BLOCK_HEADERS = frozenset({"", "block", "blocks", "id", "dataset", "data set", "task", "cell", "listener", "fold",
                           "row"})

LabelColumnOption = Annotated[bool | None, typer.Option(
    "--label-column/--no-label-column",
    help="The first column holds block labels / is a method. Default: labels when it is not numeric or is "
         "headed block, id, dataset, task, cell, listener or fold.")]


def read_scores(path: Path, label_column: bool | None = None) -> ScoreTable:
    """Parse the CSV (pandas); every problem is one error naming the file, line and column.

    ``label_column``: whether the first column holds block labels (``None``: decide from the
    table, refusing to guess when a numeric first column looks like block ids)."""
    import pandas as pd

    text = read_text(path, "CSV file")
    try:
        # header=None: pandas would rename a repeated header "A" to "A.1" and hide the mistake.
        frame = pd.read_csv(io.StringIO(text), dtype=str, header=None, keep_default_na=False,
                            skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PerserbenchError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    columns = [str(c).strip() for c in frame.iloc[0]]
    frame = frame.iloc[1:].reset_index(drop=True)
    if frame.shape[0] == 0:
        raise PerserbenchError(f"{path}: no rows of scores")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise PerserbenchError(f"{path}, line 1: column name {repeated[0]!r} appears more than once; "
                               "give every method its own column")
    frame.columns = columns

    def numeric(col: str) -> bool:
        return bool(pd.to_numeric(frame[col].str.strip(), errors="coerce").notna().all())

    first = columns[0]
    if label_column is None:
        label_column = not numeric(first) or first.lower() in BLOCK_HEADERS
        values = pd.to_numeric(frame[first].str.strip(), errors="coerce")
        if not label_column and len(frame) > 1 and (values % 1 == 0).all() and values.is_unique:
            raise PerserbenchError(
                f"{path}: the first column {first!r} holds distinct whole numbers, like block ids; pass "
                "--label-column to use it as block labels, or --no-label-column to rank it as a method"
            )
    label_col = first if label_column else None
    methods = [c for c in columns if c != label_col]
    blocks = list(frame[label_col]) if label_col else [str(i + 1) for i in range(len(frame))]
    scores = np.empty((len(frame), len(methods)))
    for j, col in enumerate(methods):
        values = pd.to_numeric(frame[col].str.strip(), errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan)))
        if bad.size:
            i = int(bad[0])
            raise PerserbenchError(f"{path}, line {i + 2}, column {col!r}: {frame[col].iloc[i]!r} is not a finite "
                                   "number (rows = blocks, columns = methods; an optional first column of labels)")
        scores[:, j] = values.to_numpy(dtype=float)
    return ScoreTable(Path(path), blocks, methods, scores)


def _emit(payload: dict, as_json: bool, table: Table, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=1, sort_keys=True))
        return
    console.print(table)
    for line in lines:
        console.print(line)


@stats_app.command("friedman")
def friedman_command(
    csv: Annotated[Path, typer.Argument(help="CSV of scores: rows = blocks, columns = methods.")],
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level of the Nemenyi critical difference.")] = 0.05,
    lower_is_better: Annotated[bool, typer.Option("--lower-is-better", help="Rank 1 = lowest score (errors, losses).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    label_column: LabelColumnOption = None,
) -> None:
    """Friedman test, Iman–Davenport F, average ranks and Nemenyi critical difference."""
    from perserbench.stats import friedman

    if not 0.0 < alpha < 1.0:
        raise PerserbenchError(f"--alpha {alpha} must lie strictly between 0 and 1")
    table = read_scores(csv, label_column)
    try:
        res = friedman(table.scores, table.methods, alpha=alpha, higher_is_better=not lower_is_better)
    except ValueError as exc:
        raise PerserbenchError(f"{csv}: {exc}") from None
    order = sorted(range(len(res.methods)), key=lambda i: res.avg_ranks[i])
    out = Table(title=f"Friedman / Nemenyi on {csv} ({res.n_blocks} blocks, {len(res.methods)} methods)")
    out.add_column("method")
    out.add_column("average rank", justify="right")
    out.add_column("mean score", justify="right")
    for i in order:
        out.add_row(res.methods[i], f"{res.avg_ranks[i]:.3f}", f"{table.scores[:, i].mean():.4f}")
    groups = "; ".join("{" + ", ".join(res.methods[i] for i in g) + "}" for g in res.groups) or "none"
    lines = [f"Friedman χ²_F = {res.chi2:.3f} (df {res.df1}), p = {res.p_value:.4g}",
             f"Iman–Davenport F_F = {res.iman_davenport:.3f} (df {res.df1}, {res.df2}), p = {res.iman_davenport_p:.4g}",
             f"Nemenyi: q_{alpha} = {res.q_alpha:.3f}, CD = {res.cd:.3f}; not significantly different: {groups}"]
    _emit(res.to_dict() | {"file": str(csv), "blocks": table.blocks}, as_json, out, lines)


@stats_app.command("pair")
def pair_command(
    csv: Annotated[Path, typer.Argument(help="CSV of scores: rows = blocks (e.g. listeners), columns = methods.")],
    a: Annotated[str, typer.Argument(help="Column of method A.")],
    b: Annotated[str, typer.Argument(help="Column of method B.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    label_column: LabelColumnOption = None,
) -> None:
    """Paired comparison of two columns: Wilcoxon, sign-flip permutation, bootstrap CI, rank-biserial."""
    from perserbench.stats import compare_pair

    table = read_scores(csv, label_column)
    x, y = table.column(a), table.column(b)
    if a == b:
        raise PerserbenchError(f"compare two different columns, not {a!r} with itself")
    res = compare_pair([np.array([v]) for v in x], [np.array([v]) for v in y], (a, b))
    out = Table(title=f"{a} vs {b} on {csv} ({res.n_listeners} paired blocks)")
    for col in ("mean A", "mean B", "Δ (A−B)", "95% CI", "W", "p Wilcoxon", "p permutation", "r_rb"):
        out.add_column(col, justify="right")
    out.add_row(f"{res.mean_a:.4f}", f"{res.mean_b:.4f}", f"{res.mean_diff:+.4f}", f"[{res.ci_low:+.4f}, {res.ci_high:+.4f}]",
                f"{res.wilcoxon_statistic:g}", f"{res.p_value:.4g}", f"{res.permutation_p:.4g}", f"{res.effect_size:+.3f}")
    payload = dataclasses.asdict(res)
    payload.pop("p_holm")
    _emit(payload | {"file": str(csv)}, as_json, out,
          ["Two-sided tests; CI: bootstrap over blocks; r_rb: matched-pairs rank-biserial correlation."])
