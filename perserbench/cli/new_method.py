"""``perserbench new-method NAME``: scaffold a built-in method and its test.

Adding a method is one file plus one test (DESIGN §3); this writes both from the templates in
``perserbench/templates/`` so that they pass as generated, and the author edits from there.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Annotated

import typer
from rich.console import Console

from perserbench.cli import app
from perserbench.errors import PerserbenchError

console = Console()
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


@dataclass(frozen=True)
class Scaffold:
    """The two files ``new-method`` writes, relative to the project root."""

    method_path: Path
    test_path: Path
    method_source: str
    test_source: str


def scaffold(name: str, root: Path) -> Scaffold:
    """Render the templates for method ``name``; refuse bad, taken or existing names."""
    from perserbench.registry import method_names

    if not NAME_PATTERN.match(name):
        raise PerserbenchError(
            f"method name {name!r} must be lower-case letters and digits, words joined by '-' or '_' "
            "(e.g. 'my-method')"
        )
    module = name.replace("-", "_")
    if keyword.iskeyword(module):
        raise PerserbenchError(f"method name {name!r} is a Python keyword; choose another")
    if name in method_names():
        raise PerserbenchError(f"method {name!r} is already registered; choose another name")
    methods_dir = root / "perserbench" / "methods"
    if not (methods_dir / "__init__.py").is_file():
        raise PerserbenchError(f"{methods_dir} is not the methods package of a perserbench checkout; "
                               "run this in the project root or pass --root")
    method_path, test_path = methods_dir / f"{module}.py", root / "tests" / f"test_method_{module}.py"
    for path in (method_path, test_path):
        if path.exists():
            raise PerserbenchError(f"{path} already exists; choose another method name")
    values = {"name": name, "module": module,
              "class_name": "".join(part.capitalize() for part in re.split(r"[-_]", name))}
    templates = files("perserbench") / "templates"
    return Scaffold(method_path, test_path,
                    Template(templates.joinpath("method.py.tmpl").read_text(encoding="utf-8")).substitute(values),
                    Template(templates.joinpath("test_method.py.tmpl").read_text(encoding="utf-8")).substitute(values))


@app.command("new-method")
def new_method_command(
    name: Annotated[str, typer.Argument(help="Registry name of the new method, e.g. my-method.")],
    root: Annotated[Path, typer.Option("--root", help="Project root holding perserbench/methods/ and tests/.")] = Path("."),
) -> None:
    """Write perserbench/methods/<name>.py (a working method skeleton) and tests/test_method_<name>.py."""
    files_ = scaffold(name, root)
    files_.test_path.parent.mkdir(parents=True, exist_ok=True)
    files_.method_path.write_text(files_.method_source, encoding="utf-8")
    files_.test_path.write_text(files_.test_source, encoding="utf-8")
    console.print(f"wrote {files_.method_path}\nwrote {files_.test_path}")
    console.print(f"next: edit both, then `pytest {files_.test_path}` and `perserbench run --method {name}`")
