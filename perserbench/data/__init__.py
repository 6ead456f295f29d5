"""Corpora: the shared corpus model and one loader per corpus, looked up by name.

Loaders are functions ``(**options) -> Corpus`` registered with :func:`register_corpus`;
options come from a task's ``[corpus]`` table or the CLI (e.g. ``root=...``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from inspect import Parameter, signature  # not `import inspect`: data/inspect.py would shadow it
from typing import Any

from perserbench.data.corpus import Annotations, Corpus, Utterance
from perserbench.errors import PerserbenchError

CorpusLoader = Callable[..., Corpus]
_LOADERS: dict[str, CorpusLoader] = {}

# Built-in loader modules, imported on first lookup so that `perserbench --help` stays fast.
_BUILTIN_MODULES = (
    "perserbench.data.synthetic",
    "perserbench.data.iemocap",
    "perserbench.data.msp_podcast",
    "perserbench.data.crema_d",
    "perserbench.data.manifest",
)


def register_corpus(name: str) -> Callable[[CorpusLoader], CorpusLoader]:
    def decorate(fn: CorpusLoader) -> CorpusLoader:
        _LOADERS[name] = fn
        return fn

    return decorate


def _import_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a loader not written yet must not break the others
            if exc.name != module:
                raise


def corpus_names() -> list[str]:
    _import_builtins()
    return sorted(_LOADERS)


def loader_options(name: str) -> tuple[str, ...] | None:
    """The option names corpus ``name``'s loader takes (``None``: it takes any, ``**kwargs``)."""
    _import_builtins()
    if name not in _LOADERS:
        raise PerserbenchError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(_LOADERS))}")
    params = signature(_LOADERS[name]).parameters.values()
    if any(p.kind is Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (Parameter.POSITIONAL_OR_KEYWORD,
                                                       Parameter.KEYWORD_ONLY))


def load_corpus(name: str, **options: Any) -> Corpus:
    """Load corpus ``name`` with loader-specific ``options`` (e.g. ``root``, ``seed``); an
    option the loader does not take is refused by name, with the ones it does take."""
    from perserbench.data.loading import OptionError

    known = loader_options(name)
    unknown = sorted(set(options) - set(known)) if known is not None else []
    if unknown:
        raise OptionError(unknown[0], f"corpus {name!r} has no option {unknown[0]!r}; its options: "
                                      f"{', '.join(known) or 'none'}")
    return _LOADERS[name](**options)


__all__ = ["Annotations", "Corpus", "Utterance", "corpus_names", "load_corpus", "loader_options", "register_corpus"]
