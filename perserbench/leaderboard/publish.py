"""Board operations: render, write, check (what CI runs) and submit result files.

Rendering is deterministic: sorted inputs, fixed-precision numbers, no timestamps, PNGs
written without a ``Software`` tag, so a rebuild of an unchanged board is byte-identical —
which is what ``build --check`` relies on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from perserbench.errors import PerserbenchError
from perserbench.leaderboard.board import Board, load_board
from perserbench.leaderboard.html import render_html
from perserbench.leaderboard.markdown import render_markdown
from perserbench.leaderboard.paths import RESULTS_DIR, result_files
from perserbench.leaderboard.plausibility import check_ceilings
from perserbench.leaderboard.validate import TaskResolver, validate_result
from perserbench.results import RunResult, write_atomic
from perserbench.roles import role_of


def render(board: Board) -> dict[str, str]:
    """The board's files (name → text), a pure function of the validated results."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with plt.style.context("default"):
        return {"README.md": render_markdown(board), "index.html": render_html(board)}


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


def _board_results(board_dir: Path) -> dict[str, tuple[str, RunResult]]:
    """The board's result files that parse (file name → (path, result)); the board's own
    problems are reported by ``build --check``, not by a submission."""
    out = {}
    for path in result_files(board_dir):
        try:
            result = RunResult.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))
            role_of(result, str(path))
        except (PerserbenchError, json.JSONDecodeError):
            continue
        out[path.name] = (str(path), result)
    return out


def submit(paths: Sequence[Path], board_dir: Path, resolver: TaskResolver, replace: bool = False) -> list[Path]:
    """Validate each file and copy it, byte for byte, to ``results/<canonical name>``.

    All files are validated — each alone, then together with the board for conflicting cells
    and against the ceiling — before any is copied, so a refused batch leaves the board
    unchanged.
    """
    from perserbench.outputs import check_output_dir
    from perserbench.runner import result_filename

    results_dir = Path(board_dir) / RESULTS_DIR
    check_output_dir(results_dir, "--board")  # an unwritable board fails before any validation
    on_board = _board_results(board_dir)
    owners: dict[tuple[str, str, bool, str, int], str] = {}
    for name, (path, result) in on_board.items():
        control = role_of(result, path) == "control"
        for s in result.scenarios:
            for k in result.shots:
                owners[(result.task_name, result.method_name, control, s, k)] = name
    plan: list[tuple[Path, Path]] = []
    for path in map(Path, paths):
        result = validate_result(path, resolver)
        target = results_dir / result_filename(result)
        if target.exists() and target.read_bytes() != path.read_bytes() and not replace:
            raise PerserbenchError(f"{path}: {target} already exists with other content; pass --replace to overwrite it")
        twin = next((p for p, t in plan if t == target and p.read_bytes() != path.read_bytes()), None)
        if twin is not None:
            raise PerserbenchError(f"{path}: {twin} in the same batch has the same canonical name {target.name} and "
                                   "other content; submit one of the two")
        control = role_of(result, str(path)) == "control"
        for s in result.scenarios:
            for k in result.shots:
                other = owners.get((result.task_name, result.method_name, control, s, k))
                if other is not None and other != target.name:
                    what = f"{result.method_name} (other-listener control)" if control else result.method_name
                    raise PerserbenchError(f"{path}: {what} on {result.task_name} {s} K={k} is already on the board "
                                           f"from {other}; remove that file first")
                owners[(result.task_name, result.method_name, control, s, k)] = target.name
        on_board[target.name] = (str(path), result)
        plan.append((path, target))
    check_ceilings(list(on_board.values()))
    for source, target in plan:
        _publish(target, source.read_text(encoding="utf-8"))
    return [t for _, t in plan]


def builtin_methods() -> list[str]:
    """Methods shipped in ``perserbench/methods/`` (not plugins): the default suite of the committed board."""
    from perserbench.registry import builtin_names

    return builtin_names()
