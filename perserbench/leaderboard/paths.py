"""Where a board lives and which of its files are results.

A board is a folder holding ``results/*.json`` and the rendered ``README.md`` and
``index.html``. Nothing here assumes a checkout of perserbench: the default board is
``$PERSERBENCH_LEADERBOARD`` or ``./leaderboard`` in the current directory, so an installed
package works on any clone of a board repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from perserbench.errors import PerserbenchError

RESULTS_DIR = "results"
BOARD_FILES = ("README.md", "index.html")
BOARD_ENV = "PERSERBENCH_LEADERBOARD"


def default_board_dir() -> Path:
    """``$PERSERBENCH_LEADERBOARD`` if set, else ``leaderboard/`` in the current directory."""
    override = os.environ.get(BOARD_ENV)
    return Path(override) if override else Path.cwd() / "leaderboard"


def existing_board_dir(board: Path | None) -> Path:
    """The board folder to build from, which must exist: building in a folder that is not a
    board would quietly publish an empty page somewhere unexpected."""
    directory = Path(board) if board is not None else default_board_dir()
    if directory.is_dir():
        return directory
    if board is not None:
        raise PerserbenchError(f"{directory}: no such leaderboard folder (--board)")
    raise PerserbenchError(f"{directory}: no leaderboard folder; pass --board, set ${BOARD_ENV}, or run from the "
                           "folder that holds leaderboard/")


def result_files(board_dir: Path) -> list[Path]:
    """The board's result files, sorted (so everything built from them is ordered the same)."""
    results = Path(board_dir) / RESULTS_DIR
    if not results.is_dir():
        return []
    return sorted(p for p in results.iterdir() if p.suffix == ".json" and not p.name.startswith("."))


def check_no_stray_files(board_dir: Path) -> None:
    """Only result files belong in ``results/``; anything else is refused, not ignored."""
    results = Path(board_dir) / RESULTS_DIR
    if not results.is_dir():
        return
    stray = sorted(p for p in results.glob("*") if p.is_file() and p.suffix != ".json" and not p.name.startswith("."))
    if stray:
        raise PerserbenchError(f"{stray[0]}: not a result file (*.json); remove it from the board")
