"""User task folders (issue 12): listed and loaded besides the built-in tasks, never instead
of them; a name defined twice is an error naming both files."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TOY_TASK

from perserbench.errors import PerserbenchError
from perserbench.tasks import load_task_spec, task_files, tasks_dir


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my-tasks"
    folder.mkdir()
    (folder / "toy-mine.toml").write_text(TOY_TASK)
    return folder


def test_env_folder_adds_to_the_builtin_tasks(user_dir, monkeypatch):
    monkeypatch.setenv("PERSERBENCH_TASKS", str(user_dir))
    files = task_files()
    assert files["toy-mine"] == (user_dir / "toy-mine.toml").resolve()
    assert files["synthetic"] == tasks_dir() / "synthetic.toml"  # the built-ins stay
    assert load_task_spec("toy-mine").corpus.name == "toy"


def test_cli_lists_builtin_and_user_tasks(cli, user_dir, monkeypatch):
    monkeypatch.delenv("PERSERBENCH_TASKS", raising=False)
    code, out, err = cli("tasks", "--tasks", user_dir)
    assert code == 0, err
    rows = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"toy-mine", "synthetic", "synthetic-uniform", "iemocap", "synthetic-draw2"} <= rows
    assert "toy-mine" in out.split(f"from {user_dir.resolve()}")[1]


def test_a_name_clash_names_both_files(cli, user_dir, monkeypatch):
    clash = user_dir / "synthetic.toml"
    clash.write_text(TOY_TASK)
    monkeypatch.setenv("PERSERBENCH_TASKS", str(user_dir))
    with pytest.raises(PerserbenchError, match="defined twice") as info:
        load_task_spec("synthetic")
    assert str(clash.resolve()) in str(info.value) and str(tasks_dir() / "synthetic.toml") in str(info.value)
    code, _, err = cli("tasks")
    assert code == 2 and err.startswith("error: task name 'synthetic' is defined twice") and str(clash.resolve()) in err
    assert load_task_spec("toy-mine").name == "toy"  # other names still load


def test_two_user_folders_clash_too(tmp_path, user_dir, monkeypatch):
    other = tmp_path / "more"
    other.mkdir()
    (other / "toy-mine.toml").write_text(TOY_TASK)
    monkeypatch.setenv("PERSERBENCH_TASKS", f"{user_dir}:{other}")
    with pytest.raises(PerserbenchError, match="'toy-mine' is defined twice.*my-tasks.*more"):
        task_files()


def test_a_missing_task_folder_is_named(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSERBENCH_TASKS", str(tmp_path / "nowhere"))
    with pytest.raises(PerserbenchError, match=r"nowhere \(from \$PERSERBENCH_TASKS\) is not a directory"):
        load_task_spec("synthetic")
    monkeypatch.delenv("PERSERBENCH_TASKS")
    code, _, err = cli("tasks", "--tasks", tmp_path / "nope")
    assert code == 2 and "nope (from --tasks) is not a directory" in err
