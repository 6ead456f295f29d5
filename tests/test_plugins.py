"""Third-party methods: the example plugin package, installed into a fresh venv, runs through
`perserbench run`; `perserbench new-method` writes a method and a test that pass as generated."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from perserbench.leaderboard import TaskResolver, validate_result
from perserbench.results import load_result

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "perserbench-example-plugin"
PLUGIN_METHOD = "nearest-centroid"
OFFLINE = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}

# A cut-down task on the bundled synthetic corpus: a real corpus loader, few episodes.
PLUGIN_TASK = """
name = "plugin-check"
version = "0.1"
[corpus]
name = "synthetic"
features = "synthetic"
labels = ["neutral", "happy", "sad", "angry", "frustrated", "excited"]
options = { seed = 0 }
[listeners]
folds = 2
seed = 3
[utterances]
split = "session"
heldout = ["Ses05"]
[episodes]
scenarios = ["seen", "unseen"]
shots = [5]
query = 10
min_query = 5
episodes = 2
seed = 11
"""


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    """A new venv that sees the project's environment through a .pth file (so nothing is
    downloaded) and has the example plugin pip-installed into itself, not the project venv."""
    root = tmp_path_factory.mktemp("plugin-venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    parent = sysconfig.get_paths()["purelib"]
    (purelib / "_perserbench_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    source = root / "src"  # build from a copy: setuptools leaves build/ and egg-info next to the sources
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(check=False, args=[str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                           str(source)], capture_output=True, text=True, env=OFFLINE)
    assert proc.returncode == 0, proc.stderr
    return python


def _in_venv(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], check=False, capture_output=True, text=True, cwd=cwd, env=OFFLINE, timeout=600)


def test_plugin_is_installed_in_the_fresh_venv_only(plugin_python, tmp_path):
    code = ("from importlib.metadata import distribution; import sysconfig; "
            "d = distribution('perserbench-example-plugin'); "
            "print(d.locate_file('') == __import__('pathlib').Path(sysconfig.get_paths()['purelib']))")
    proc = _in_venv(plugin_python, "-c", code, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr
    proc = _in_venv(plugin_python, "-m", "perserbench", "methods", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert PLUGIN_METHOD in proc.stdout and "plugin perserbench-example-plugin" in proc.stdout


def test_plugin_runs_end_to_end_through_perserbench_run(plugin_python, tmp_path):
    task_file = tmp_path / "plugin-check.toml"
    task_file.write_text(PLUGIN_TASK)
    out = tmp_path / "out"
    proc = _in_venv(plugin_python, "-m", "perserbench", "run", "--method", PLUGIN_METHOD, "--task", str(task_file),
                    "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("*.json")
    result = load_result(path)
    assert result.method_name == PLUGIN_METHOD and result.method["config"] == {"temperature": 1.0}
    assert {(r.scenario, r.shots) for r in result.summary} == {("seen", 5), ("unseen", 5)}
    # complete and self-consistent: the leaderboard's validator accepts it against the task
    validate_result(path, TaskResolver(tmp_path))
    scores = [r.macro_f1 for r in result.episodes]
    assert len(set(scores)) > 1 and all(0.0 <= s <= 1.0 for s in scores)


def test_plugin_method_uses_the_support_labels(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    from perserbench_example_plugin import NearestCentroid

    from perserbench.episodes import Items, LabelledItems, MetaTrainSet  # noqa: F401 - contract types

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, 4, generator=g)
    y = torch.zeros(40, 3)
    y[:, 0] = (x[:, :, 0].mean(dim=1) > 0).float()
    y[:, 1] = 1.0 - y[:, 0]

    class Train:
        pass

    train = Train()
    train.x, train.y = x, y
    method = NearestCentroid()
    method.meta_fit(train)  # type: ignore[arg-type]
    support = LabelledItems(x[:20], y[:20])
    query = Items(x[20:])
    proba = method.adapt(support).predict_proba(query)
    assert proba.shape == (20, 3) and ((proba >= 0) & (proba <= 1)).all()
    hits = ((proba[:, 0] >= 0.5).float() == y[20:, 0]).float().mean()
    assert hits >= 0.8  # class 0 is the sign of feature 0: centroids separate it
    assert torch.allclose(proba[:, 2], torch.zeros(20))  # never in the support: meta-train rate (0)
    flipped = LabelledItems(x[:20], 1.0 - y[:20])
    assert not torch.allclose(method.adapt(flipped).predict_proba(query)[:, :2], proba[:, :2])


# ------------------------------------------------------------------- perserbench new-method


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A minimal project tree: the methods package the skeleton builds on, and tests/conftest.py."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "perserbench", root / "perserbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tests").mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests" / "conftest.py")
    return root


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # `perserbench` resolves to the copy
    return subprocess.run([sys.executable, "-m", "perserbench", *args], check=False, capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_new_method_writes_a_method_and_a_test_that_pass_as_generated(project_copy):
    proc = _cli("new-method", "my-blend", "--root", str(project_copy), cwd=project_copy)
    assert proc.returncode == 0, proc.stderr
    method_file = project_copy / "perserbench" / "methods" / "my_blend.py"
    test_file = project_copy / "tests" / "test_method_my_blend.py"
    assert '@register_method("my-blend")' in method_file.read_text()
    assert "class MyBlend(Method)" in method_file.read_text()
    listed = _cli("methods", cwd=project_copy)
    assert listed.returncode == 0 and "my-blend" in listed.stdout, listed.stderr
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)], check=False,
                           capture_output=True, text=True, cwd=project_copy,
                           env={**os.environ, "PYTHONPATH": str(project_copy)}, timeout=600)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "5 passed" in tests.stdout


@pytest.fixture
def cli_in_process(monkeypatch, capsys):
    """`perserbench ...` through the real entry point, in this process (fast)."""
    from perserbench.cli import main

    def invoke(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["perserbench", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, capsys.readouterr().err

    return invoke


@pytest.mark.parametrize("name,message", [
    ("consensus", "method 'consensus' is already registered"),
    ("Bad Name", "must be lower-case letters and digits"),
    ("class", "is a Python keyword"),
])
def test_new_method_refuses_taken_or_bad_names(project_copy, cli_in_process, name, message):
    before = sorted(p.name for p in (project_copy / "perserbench" / "methods").iterdir())
    code, err = cli_in_process("new-method", name, "--root", project_copy)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert sorted(p.name for p in (project_copy / "perserbench" / "methods").iterdir()) == before


def test_new_method_refuses_to_overwrite_its_own_files(project_copy, cli_in_process):
    assert cli_in_process("new-method", "mine", "--root", project_copy)[0] == 0
    (project_copy / "perserbench" / "methods" / "mine.py").unlink()  # the test file is still there
    code, err = cli_in_process("new-method", "mine", "--root", project_copy)
    assert code == 2 and "test_method_mine.py already exists" in err
    assert not (project_copy / "perserbench" / "methods" / "mine.py").exists()
