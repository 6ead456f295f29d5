"""Release check: what a new user gets from ``pip install perserbench``, outside a clone.

Builds the sdist and the wheel (``python -m build``, isolated as for a release), checks the
wheel's file list, installs the wheel into a fresh virtual environment in a temporary folder,
and there, from a folder that is not a clone, runs ``perserbench tasks``,
``perserbench run --method consensus --shots 5`` and the README's Python example. An editable
install inside the checkout hides every packaging mistake (missing package data, a stray
top-level module, a file read relative to the repository); this does not.

Dependencies: downloading torch and its CUDA libraries again for the fresh environment would
cost minutes and gigabytes in every CI run. The fresh environment instead *sees* the
already-installed distributions of perserbench's runtime dependency closure (its
``Requires-Dist`` without extras, followed recursively): they are linked into a folder that
the fresh environment adds as a site directory. Only that closure is visible: not
perserbench's editable install, not the dev tools (pytest, ruff ...), not plugins. pip
installs the wheel there with ``--no-index``, so it checks the wheel's declared version
ranges against the tested versions and fails if a dependency is missing or out of range.

Usage (from the repository root, in the project's virtual environment, as ``.ci/run`` does):
``.venv/bin/python .ci/release_check.py [--keep]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "perserbench"
BUILTIN_TASKS = ("synthetic", "synthetic-uniform", "iemocap", "msp-podcast", "crema-d")
README_EXAMPLE_HEADING = "## Python API"


class CheckFailed(Exception):
    """One line saying what a new user would hit."""


def wheel_problems(names: list[str]) -> list[str]:
    """Problems in a wheel's file list: any top-level module besides ``perserbench`` (it
    would collide in site-packages), or a built-in task spec or template missing."""
    problems = []
    tops = {n.split("/", 1)[0] for n in names if n.strip("/")}
    for top in sorted(tops):
        if top != PACKAGE and not re.fullmatch(rf"{PACKAGE}-[^/]+\.dist-info", top):
            problems.append(f"top-level entry {top!r} besides {PACKAGE}/ (it would collide in site-packages)")
    for task in BUILTIN_TASKS:
        if f"{PACKAGE}/tasks/{task}.toml" not in names:
            problems.append(f"built-in task spec {PACKAGE}/tasks/{task}.toml is missing")
    if not any(n.startswith(f"{PACKAGE}/templates/") and n.endswith(".tmpl") for n in names):
        problems.append(f"the templates of `perserbench new-method` ({PACKAGE}/templates/*.tmpl) are missing")
    return problems


def readme_example(readme: str) -> str:
    """The first fenced ``python`` block under the README's Python API heading, as written."""
    _, found, rest = readme.partition(README_EXAMPLE_HEADING)
    match = re.search(r"^```python\n(.*?)^```", rest, flags=re.DOTALL | re.MULTILINE) if found else None
    if match is None:
        raise CheckFailed(f"README.md has no ```python block under {README_EXAMPLE_HEADING!r}")
    return match.group(1)


def _step(what: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    print(f"  {time.perf_counter() - started:6.1f} s  {what}", flush=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise CheckFailed(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def _runtime_closure(wheel: Path) -> list[md.Distribution]:
    """Installed distributions of the wheel's runtime requirements, recursively (markers
    evaluated, extras not followed: a user's ``pip install perserbench`` gets no extras)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    todo = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    seen: dict[str, md.Distribution] = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise CheckFailed(f"dependency {req} is not installed in {sys.prefix}; run `make install` first") from None
        seen[key] = dist
        todo.extend(Requirement(r) for r in dist.requires or [])
    return list(seen.values())


def _link_dependencies(wheel: Path, deps: Path) -> int:
    """Symlink every top-level file of the closure's distributions into ``deps``."""
    deps.mkdir()
    closure = _runtime_closure(wheel)
    for dist in closure:
        if dist.files is None:
            raise CheckFailed(f"{dist.metadata['Name']} has no RECORD; cannot tell its files apart")
        for top in {f.parts[0] for f in dist.files if f.parts and f.parts[0] not in ("..", "__pycache__")}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (deps / top).exists():
                (deps / top).symlink_to(source)
    return len(closure)


def release_check(work: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PERSERBENCH_TASKS")}
    dist, venv, deps, outside = work / "dist", work / "venv", work / "deps", work / "user"
    _step("build sdist + wheel (python -m build)", [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
          env=env)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as zf:
        problems = wheel_problems(zf.namelist())
    if problems:
        raise CheckFailed(f"{wheel.name}: " + "; ".join(problems))
    print(f"           wheel file list ok ({wheel.name}; sdist {sdist.name})")

    _step("fresh venv", [sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env)
    count = _link_dependencies(wheel, deps)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env=env).stdout.strip()
    # A site directory (not a bare path entry), so .pth files of the dependencies still work.
    Path(purelib, "_release_check_deps.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    print(f"           {count} runtime dependencies linked from {sys.prefix}")
    # No index, no find-links, no pip configuration (PIP_CONFIG_FILE=/dev/null skips every
    # config file): the linked dependencies must satisfy the wheel's declared ranges by
    # themselves; pip cannot quietly fetch a dependency from anywhere.
    offline = {k: v for k, v in env.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    _step("pip install the wheel (offline)",
          [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-index", str(wheel)],
          env=offline)

    outside.mkdir()
    bin_ = venv / "bin"
    probe = "import perserbench, perserbench.tasks as t; print(perserbench.__file__); print(t.tasks_dir())"
    where = _step("import perserbench from the venv", [str(python), "-c", probe], cwd=outside, env=env).stdout.split()
    if any(not Path(p).resolve().is_relative_to(venv.resolve()) for p in where):
        raise CheckFailed(f"perserbench was imported from outside the fresh venv: {where}")
    tasks = _step("perserbench tasks", [str(bin_ / "perserbench"), "tasks"], cwd=outside, env=env).stdout
    missing = [t for t in ("synthetic", "synthetic-uniform") if not re.search(rf"^{re.escape(t)}\s", tasks, re.MULTILINE)]
    if missing:
        raise CheckFailed(f"perserbench tasks does not list {missing}:\n{tasks}")
    _step("perserbench run --method consensus --shots 5",
          [str(bin_ / "perserbench"), "run", "--method", "consensus", "--shots", "5", "--out", "runs"],
          cwd=outside, env=env)
    if len(list((outside / "runs").glob("consensus__synthetic__*.json"))) != 1:
        raise CheckFailed("perserbench run wrote no result file")
    example = outside / "readme_example.py"
    example.write_text(readme_example((REPO / "README.md").read_text(encoding="utf-8")))
    _step("README Python example", [str(python), str(example)], cwd=outside, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed) for inspection")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="perserbench-release-check-"))
    if work.resolve().is_relative_to(REPO):
        raise SystemExit("release check: the temporary folder must be outside the checkout")
    started = time.perf_counter()
    print(f"release check in {work}", flush=True)
    try:
        release_check(work)
    except CheckFailed as exc:
        print(f"release check FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"release check passed in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
