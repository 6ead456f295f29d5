"""User-facing errors.

Every problem caused by the user's input (a file, a name, a value) is raised as a
:class:`PerserbenchError` whose message is one line naming the offending file/line, key or
value and what to do about it. The CLI prints that line to stderr and exits with code 2;
anything else is a bug and keeps its traceback.
"""


class PerserbenchError(Exception):
    """An error in the user's input, reported as one line by the CLI (exit code 2)."""


class LeakageError(PerserbenchError):
    """A split or episode violates the protocol's no-leakage invariants (DESIGN §2)."""
