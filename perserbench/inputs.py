"""Reading the user's text files (task specs, manifests, annotation files, result files).

One function, so that every reader reports the same problems the same way — as one
:class:`PerserbenchError` line naming the file (and, for bad bytes, the line) and what to do —
instead of a ``UnicodeDecodeError`` or ``IsADirectoryError`` traceback from deep inside a
loader. Text is decoded strictly: a wrong byte silently replaced could change a label or an id.
"""

from __future__ import annotations

from pathlib import Path

from perserbench.errors import PerserbenchError


def read_text(path: str | Path, what: str = "file", encoding: str = "utf-8") -> str:
    """The text of ``path`` (``what`` names it in errors: "task file", "manifest", ...).

    ``encoding`` is ``utf-8`` or ``utf-8-sig`` (a leading byte-order mark is dropped).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PerserbenchError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise PerserbenchError(f"{path}: is a directory; pass the {what} itself") from None
    except PermissionError:
        raise PerserbenchError(f"{path}: cannot read the {what} (permission denied)") from None
    except OSError as exc:
        raise PerserbenchError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PerserbenchError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
            f"save the {what} as UTF-8"
        ) from None
