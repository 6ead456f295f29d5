"""The leaderboard (DESIGN §5): validated result files in, a deterministic board out.

The board is a pure function of the committed files in ``<board>/results/``; nothing is ever
typed into it. Its parts:

* :mod:`.paths` — where a board lives (``--board``, ``$PERSERBENCH_LEADERBOARD``, ``./leaderboard``);
* :mod:`.validate` — one result file against its task and against itself;
* :mod:`.plausibility` — the independence audit, the reference flag, the oracle ceiling;
* :mod:`.board` — the model: ranked methods, references, controls and their statistics;
* :mod:`.markdown`, :mod:`.html` (+ :mod:`.figures`, :mod:`.format`) — the two pages;
* :mod:`.publish` — build, ``--check``, submit.
"""

from perserbench.leaderboard.board import Board, Cell, Comparison, TaskBoard, load_board
from perserbench.leaderboard.paths import (
    BOARD_FILES,
    RESULTS_DIR,
    default_board_dir,
    existing_board_dir,
    result_files,
)
from perserbench.leaderboard.publish import (
    build,
    builtin_methods,
    check_board,
    render,
    submit,
    write_board,
)
from perserbench.leaderboard.validate import TaskResolver, validate_result

__all__ = [
    "BOARD_FILES", "RESULTS_DIR", "Board", "Cell", "Comparison", "TaskBoard", "TaskResolver", "build",
    "builtin_methods", "check_board", "default_board_dir", "existing_board_dir", "load_board", "render",
    "result_files", "submit", "validate_result", "write_board",
]
