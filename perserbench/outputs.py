"""Checking an output location before any work is done.

A run or a sweep can take hours; an ``--out`` that is a file, lies under a file or cannot be
written must fail in the first second, not when the result is saved and every forward pass is
lost. :func:`check_output_dir` is called by every command that writes (``run``, ``sweep``,
``compare --out``, ``leaderboard submit``) before it loads data. It creates nothing: a refused
or failed command leaves no empty folder behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from perserbench.errors import PerserbenchError


def check_output_file(path: str | Path, option: str) -> None:
    """Like :func:`check_output_dir` for a single output file: ``path`` must not be a
    directory and its folder must be, or be creatable as, a writable directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise PerserbenchError(f"{option} {path} is a directory; give the path of a file to write")
    _check_writable(path, path.absolute().parent, option)


def check_output_dir(path: str | Path, option: str = "--out") -> None:
    """Raise a one-line :class:`PerserbenchError` unless ``path`` is, or can be created as, a
    writable directory. ``option`` names the command-line option in the message."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise PerserbenchError(f"{option} {path} is a file, not a directory; choose a directory for the output")
    _check_writable(path, path.absolute(), option)


def _check_writable(path: Path, target: Path, option: str) -> None:
    """``target`` (the folder to write in) exists as a writable directory or can be created."""
    existing = target
    while not existing.exists():  # the nearest ancestor that exists: where mkdir would start
        existing = existing.parent
    if not existing.is_dir():
        raise PerserbenchError(f"{option} {path} lies under {existing}, which is a file, not a directory; "
                               "choose another output directory")
    # Permission bits say little (root ignores them; read-only mounts ignore the bits): try.
    try:
        fd, probe = tempfile.mkstemp(prefix=".perserbench-write-test-", dir=existing)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PerserbenchError(f"{option} {path} is not writable ({existing}: {reason.lower()}); "
                               "choose a directory you can write to") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
