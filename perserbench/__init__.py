"""perserbench: a benchmark for listener-personalized speech emotion recognition.

The Python API (:mod:`perserbench.api`) is re-exported here lazily: ``import perserbench``
stays instant (the command line imports it on every call), and torch is imported only when
:func:`evaluate` or :func:`compare` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Comparison", "__version__", "compare", "evaluate"]

if TYPE_CHECKING:
    from perserbench.api import Comparison, compare, evaluate


def __getattr__(name: str) -> Any:
    if name in ("Comparison", "compare", "evaluate"):
        from perserbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'perserbench' has no attribute {name!r}")
