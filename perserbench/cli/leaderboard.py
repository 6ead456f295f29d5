"""``perserbench leaderboard validate|submit|reproduce|build|suite``: the CI-checked board (DESIGN §5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from perserbench.cli import app

console = Console()
leaderboard_app = typer.Typer(
    help="Validate and submit result files; build the leaderboard (README.md + index.html) from them.",
    no_args_is_help=True,
)
app.add_typer(leaderboard_app, name="leaderboard")

BoardOption = Annotated[Path | None, typer.Option(
    "--board", help="Leaderboard folder (holds results/, README.md, index.html). "
    "Default: $PERSERBENCH_LEADERBOARD, else ./leaderboard in the current directory.")]
TasksOption = Annotated[Path | None, typer.Option(
    "--tasks", help="Folder of task specs to validate against. "
    "Default: $PERSERBENCH_TASKS, else the task specs installed with perserbench.")]
RootOption = Annotated[Path | None, typer.Option("--root", help="Corpus root directory (real corpora).")]


def _resolver(tasks: Path | None, root: Path | None):
    from perserbench.leaderboard import TaskResolver

    return TaskResolver(tasks, {"root": str(root)} if root else None)


@leaderboard_app.command("validate")
def validate_command(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files (or folders of them).")],
    tasks: TasksOption = None,
    root: RootOption = None,
) -> None:
    """Check result files as the board does; the first invalid file is reported and exits 2."""
    from perserbench.leaderboard import validate_result
    from perserbench.results import find_result_files

    resolver = _resolver(tasks, root)
    for path in find_result_files(results):
        result = validate_result(path, resolver)
        console.print(f"ok  {path}  ({result.method_name} on {result.task_name}, {len(result.episodes)} episodes)")


@leaderboard_app.command("submit")
def submit_command(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files written by `perserbench run`.")],
    board: BoardOption = None,
    tasks: TasksOption = None,
    root: RootOption = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a board file of the same name.")] = False,
) -> None:
    """Validate result files and copy them to <board>/results/ under their canonical names
    (a --board folder that does not exist yet is created; the default board must exist)."""
    from perserbench.leaderboard import existing_board_dir, submit

    directory = board if board is not None else existing_board_dir(None)
    for path in submit(results, directory, _resolver(tasks, root), replace=replace):
        console.print(f"submitted {path}")
    console.print("now run `perserbench leaderboard build` and commit the leaderboard folder")


@leaderboard_app.command("reproduce")
def reproduce_command(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files (or folders of them).")],
    tasks: TasksOption = None,
    root: RootOption = None,
    exact: Annotated[bool, typer.Option("--exact", help="Demand identical records even for a file written on "
                                                        "another kind of machine.")] = False,
) -> None:
    """Re-run each result's method (its recorded config, task, shots, seeds and control) and
    check every episode record is identical; the first difference is reported and exits 2.
    A file written on another kind of machine (CPU, torch, numpy, Python) whose records differ
    passes *within tolerance* when every (scenario, K) cell's per-listener mean macro-F1 is shown
    equivalent (TOST within the board's ±0.01), unless --exact.
    Works for any installed method: a plugin's result can be checked before it is committed."""
    from perserbench.leaderboard.reproduce import largest_difference, reproduce
    from perserbench.results import find_result_files
    from perserbench.stats import NO_HARM_MARGIN

    resolver = _resolver(tasks, root)
    for path in find_result_files(results):
        done = reproduce(path, resolver, progress=True, exact=exact)
        what = f"{done.result.method_name} on {done.result.task_name}"
        if done.exact:
            console.print(f"reproduced  {path}  ({what}: {done.episodes} episode records identical, re-run in "
                          f"{done.wall_time_s:.1f} s)")
            continue
        console.print(f"reproduced within tolerance  {path}  ({what}: {done.differing} of {done.episodes} episode "
                      f"records differ, the file written elsewhere ({done.elsewhere}); every one of {len(done.cells)} "
                      f"cells shown equivalent within ±{NO_HARM_MARGIN} (TOST), largest difference "
                      f"{largest_difference(done.cells).describe()}; re-run in {done.wall_time_s:.1f} s)")


@leaderboard_app.command("build")
def build_command(
    check: Annotated[bool, typer.Option("--check", help="Do not write; fail (exit 2) if a result is invalid "
                                                         "or a committed board file differs from a rebuild.")] = False,
    board: BoardOption = None,
    tasks: TasksOption = None,
    root: RootOption = None,
) -> None:
    """Render README.md and index.html from the validated files in <board>/results/ only."""
    from perserbench.leaderboard import check_board, existing_board_dir, result_files, write_board

    directory = existing_board_dir(board)
    if check:
        check_board(directory, _resolver(tasks, root))
        console.print(f"leaderboard {directory} is up to date ({len(result_files(directory))} result files)")
        return
    for path in write_board(directory, _resolver(tasks, root)):
        console.print(f"wrote {path}")


@leaderboard_app.command("suite")
def suite_command() -> None:
    """Print the built-in methods (the default suite of the committed board), one per line."""
    from perserbench.leaderboard import builtin_methods

    typer.echo("\n".join(builtin_methods()))
