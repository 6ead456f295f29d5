"""The committed board is the board suite's output under the methods' current defaults: every
planned run (competitors, references, other-listener controls) has the very file the suite
would write now. A default changed without regenerating the board (or a file left from an
older config) fails here, naming the runs to redo with ``benchmarks/board_suite.py``."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import board_suite


def test_every_planned_run_has_its_file_under_the_current_defaults():
    results = REPO / "leaderboard" / "results"
    runs = board_suite.plan(list(board_suite.BOARD_TASKS), board_suite.COMPETITORS)
    missing = [run for run in runs if board_suite.existing(run, results) is None]
    assert not missing, f"regenerate: {missing}"
    planned = {board_suite.existing(run, results).name for run in runs}
    assert planned == {p.name for p in results.glob("*.json")}  # and no file the suite would not write


def test_the_replicates_are_the_bundled_ones():
    from perserbench.tasks import load_task_spec, task_names

    bundled = {n for n in task_names() if load_task_spec(n).replicate_of in board_suite.HETEROGENEOUS}
    assert set(board_suite.REPLICATES) == bundled


def test_a_file_of_another_config_is_not_the_runs(tmp_path):
    run = board_suite.Run("synthetic-uniform", "consensus", "own")
    committed = board_suite.existing(run, REPO / "leaderboard" / "results")
    (tmp_path / committed.name.replace(committed.name.split("__")[-2], "00000000")).write_text("{}")
    assert board_suite.existing(run, tmp_path) is None
    (tmp_path / committed.name).write_text("{}")
    assert board_suite.existing(run, tmp_path) == tmp_path / committed.name
