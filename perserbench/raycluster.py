"""Connecting to Ray and reading its task failures, shared by the sweep executor and sharded
feature extraction, so both say the same thing when Ray is missing or a worker dies.

Ray is imported only here and only when an ``--executor ray`` command runs, so the rest of
perserbench works without it.
"""

from __future__ import annotations

from types import ModuleType

from perserbench.errors import PerserbenchError


def connect(address: str | None) -> ModuleType:
    """The ``ray`` module, connected to ``address`` (``None``: a new local cluster, or the one
    this process is already connected to; ``auto``: the cluster started on this machine with
    ``ray start``)."""
    try:
        import ray
    except ImportError:
        raise PerserbenchError("--executor ray needs Ray: pip install 'perserbench[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False)
        except ConnectionError as exc:
            raise PerserbenchError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    return ray


def task_cause(exc: BaseException) -> BaseException | None:
    """The exception a failed Ray task raised itself, or ``None`` when its worker died."""
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        return exc.cause if getattr(exc, "cause", None) is not None else exc
    return None


def task_failure(exc: BaseException) -> str:
    """One line on why a Ray task failed: a worker that died (killed, out of memory) or the
    error the task raised (a :class:`PerserbenchError` keeps its own message)."""
    from ray import exceptions as rex

    cause = task_cause(exc)
    if cause is not None:
        if isinstance(cause, PerserbenchError):
            return str(cause)
        return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    if isinstance(exc, (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError)):
        return f"its Ray worker died ({type(exc).__name__}; Ray retries such a task before giving up)"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


__all__ = ["connect", "task_cause", "task_failure"]
