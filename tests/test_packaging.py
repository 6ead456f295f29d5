"""Packaging (issue 12): the wheel installs ``perserbench`` and nothing else, carries the
built-in task specs, and the README's Python example runs exactly as written.

The wheel is built the way the release check builds it (``python -m build``: sdist, then the
wheel from the sdist), without build isolation so the test needs no network: the dev extra
installs ``build`` and ``setuptools``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _release_check():
    spec = importlib.util.spec_from_file_location("release_check", REPO / ".ci" / "release_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, sdist) built from a copy of the sources (the build writes into its source tree)."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "perserbench", src / "perserbench", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(src)],
                          check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("*.whl")
    (sdist,) = (tmp / "dist").glob("*.tar.gz")
    return wheel, sdist


def test_wheel_installs_only_perserbench_with_task_specs(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"perserbench"}, sorted(tops)
    tasks = sorted(n for n in names if n.startswith("perserbench/tasks/") and n.endswith(".toml"))
    assert tasks == sorted(f"perserbench/tasks/{p.name}" for p in (REPO / "perserbench" / "tasks").glob("*.toml"))
    assert "perserbench/tasks/synthetic.toml" in names and "perserbench/methods/consensus.py" in names
    assert _release_check().wheel_problems(names) == []


def test_sdist_carries_the_task_specs(built):
    _, sdist = built
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert "perserbench/tasks/synthetic.toml" in names and "pyproject.toml" in names


def test_wheel_check_names_a_stray_module_and_a_missing_spec():
    good = [f"perserbench/tasks/{t}.toml" for t in _release_check().BUILTIN_TASKS] + [
        "perserbench/__init__.py", "perserbench/templates/method.py.tmpl", "perserbench-0.1.0.dist-info/RECORD"]
    check = _release_check().wheel_problems
    assert check(good) == []
    problems = check([n for n in good if not n.endswith("iemocap.toml")] + ["methods/__init__.py"])
    assert any("'methods'" in p for p in problems) and any("iemocap.toml is missing" in p for p in problems)


def test_readme_python_example_runs_as_written(tmp_path):
    """Extracted from README.md and run as a script (with its main guard) in a folder that is
    not the checkout; prints the per-listener frame of all 16 test listeners and the summary.

    One line is put in front of it: a note in a file each time the script's module runs. The
    script runs once; the sealed fold workers (four folds, two runs) never run it again
    (``perserbench.sealed._without_main_module``: each re-run cost a fold worker ~0.9 CPU-s)."""
    code = _release_check().readme_example((REPO / "README.md").read_text(encoding="utf-8"))
    assert 'if __name__ == "__main__":' in code and "class " in code
    script = tmp_path / "example.py"
    runs = tmp_path / "module-runs.txt"
    script.write_text(f"open({str(runs)!r}, 'a').write(__name__ + '\\n')\n" + code)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PERSERBENCH_TASKS", None)
    proc = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(re.findall(r"\bE\d\d\b", proc.stdout)) == {f"E{i:02d}" for i in range(1, 17)}, proc.stdout
    assert "personal-knn" in proc.stdout and "consensus" in proc.stdout
    assert runs.read_text().split() == ["__main__"]


def test_git_revision_only_of_a_perserbench_checkout(tmp_path, monkeypatch):
    """An installed wheel inside another repository (a venv in a user's project) must not
    record that repository's commit as perserbench's revision."""
    import perserbench
    from perserbench import runner

    repo = tmp_path / "project"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    site = repo / ".venv" / "lib" / "site-packages" / "perserbench"
    site.mkdir(parents=True)
    monkeypatch.setattr(perserbench, "__file__", str(site / "__init__.py"))
    assert runner._git_revision() is None
    (repo / "perserbench").mkdir()
    monkeypatch.setattr(perserbench, "__file__", str(repo / "perserbench" / "__init__.py"))
    assert runner._git_revision() == head
