"""Method registry, after lm-evaluation-harness: built-ins register with a decorator in
``methods/``; third-party packages expose an entry point in group ``perserbench.methods``
(the entry point's object is the method class, or a module that registers on import).

Loading a plugin runs its import-time code in the calling process, so this module loads one
only when asked for by name (:func:`get_method`) or when every method is listed
(:func:`method_names`, ``perserbench methods``), and :func:`builtin_names` lists the built-ins
without loading any. A *run* never loads a plugin here at all: the runner holds the task and
its ground truth, so it learns a plugin's config from a data-free process and has the plugin
imported only in its fold workers (:mod:`perserbench.plugins`).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from perserbench.errors import PerserbenchError
from perserbench.method import Method

ENTRY_POINT_GROUP = "perserbench.methods"
BUILTIN_PACKAGE = "perserbench.methods."
_REGISTRY: dict[str, type[Method]] = {}
_SOURCES: dict[str, str] = {}
_builtins_loaded = False
_tried: set[str] = set()  # entry point names already loaded (or tried)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a :class:`Method` subclass available as ``name``."""

    def decorate(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) must decorate a Method subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"method name {name!r} is already registered by {existing.__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        _SOURCES.setdefault(name, cls.__module__)
        return cls

    return decorate


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from perserbench import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"perserbench.methods.{info.name}")


def _load_entry_points(name: str | None = None) -> None:
    """Load the plugins registered under ``name`` (every plugin when ``None``), each once."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if (name is not None and ep.name != name) or ep.name in _tried:
            continue
        _tried.add(ep.name)
        before = set(_REGISTRY)
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not hide the built-ins
            raise PerserbenchError(
                f"entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP} failed to load: {exc}"
            ) from exc
        if isinstance(obj, type) and issubclass(obj, Method) and ep.name not in _REGISTRY:
            register_method(ep.name)(obj)
        dist = getattr(ep, "dist", None)
        # Every name the plugin registered is the plugin's (a module may register several);
        # an entry point named like a built-in registers nothing, and the name stays the built-in's.
        for added in set(_REGISTRY) - before:
            if not _SOURCES.get(added, "").startswith(BUILTIN_PACKAGE):
                _SOURCES[added] = f"plugin {dist.name if dist else ep.value}"


def _load_all() -> None:
    _load_builtins()
    _load_entry_points()


def builtin_names() -> list[str]:
    """The methods shipped in ``perserbench/methods/`` (the committed board's suite), without
    loading any plugin."""
    _load_builtins()
    return sorted(n for n, source in _SOURCES.items() if source.startswith(BUILTIN_PACKAGE))


def registered_modules() -> list[str]:
    """The modules that define the methods registered so far, installed plugins excepted:
    a plugin is imported only where its own method runs (:mod:`perserbench.plugins`), never
    in a process shared with other methods such as the sealed runner's forkserver."""
    return sorted({cls.__module__ for name, cls in list(_REGISTRY.items()) if not is_plugin(name)})


def is_plugin(name: str) -> bool:
    """Whether ``name`` is an installed plugin's (an entry point in ``perserbench.methods``),
    not a built-in or a class registered in this process; decided without loading it."""
    source = _SOURCES.get(name)
    if source is None:
        _load_builtins()
        source = _SOURCES.get(name)
    if source is not None:
        return source.startswith("plugin ")
    return name in entry_points(group=ENTRY_POINT_GROUP).names


def method_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    """The class registered as ``name``; a plugin is loaded only when ``name`` is its own."""
    _load_builtins()
    if name not in _REGISTRY:
        _load_entry_points(name)
    if name not in _REGISTRY:
        known = sorted({*_REGISTRY, *entry_points(group=ENTRY_POINT_GROUP).names})  # names only: nothing loaded
        raise PerserbenchError(f"unknown method {name!r}; known methods: {', '.join(known)}")
    return _REGISTRY[name]


def load_plugin(name: str) -> type[Method]:
    """The installed plugin ``name``, loaded alone: no built-in method is imported, which
    keeps the process that describes a plugin (:mod:`perserbench.plugins`) at torch's import."""
    if name not in _REGISTRY:
        _load_entry_points(name)
    if name not in _REGISTRY:
        raise PerserbenchError(f"unknown method {name!r}: no installed plugin has that name")
    return _REGISTRY[name]


def method_source(name: str) -> str:
    """Where ``name`` comes from: a module for a built-in (or a class registered in code),
    ``plugin <distribution>`` for an entry point; "" for an unknown name."""
    _load_builtins()
    if name not in _SOURCES:
        _load_entry_points(name)
    return _SOURCES.get(name, "")


@dataclass(frozen=True)
class ConfigField:
    name: str
    type: str
    default: Any
    doc: str
    valid: str = ""  # the declared range, e.g. ">= 1", ">= 0, < 1", "consensus or random"


_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _valid_text(f: dataclasses.Field) -> str:
    """The declared range of a config field in words (``perserbench methods`` and errors)."""
    if "choices" in f.metadata:
        return "one of " + ", ".join(f.metadata["choices"])
    return ", ".join(f"{_BOUND_TEXT[k]} {v:g}" for k, v in f.metadata.get("bounds", {}).items())


def config_fields(name: str) -> list[ConfigField]:
    """Fields of a method's Config with defaults, the per-field reason (``metadata['doc']``)
    and the declared range."""
    cls = get_method(name).Config
    out = []
    for f in dataclasses.fields(cls):
        out.append(ConfigField(f.name, str(f.type), _default(f), f.metadata.get("doc", ""), _valid_text(f)))
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def check_config(name: str, config: Any) -> None:
    """Refuse a config value outside its field's declared range (:func:`perserbench.head._doc`)
    and any NaN or infinite number, with one line naming the method, key, value, the valid
    range and the default. Called by :func:`make_config` for ``--config`` overrides; call it
    too for a config built in code, before any data is loaded or any model trained."""
    if not dataclasses.is_dataclass(config):
        return
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        problem = _field_problem(f, value)
        if problem is not None:
            valid = _valid_text(f) or "a finite number"
            valid = valid if valid.startswith(("one of", "a ")) else f"a value {valid}"
            raise PerserbenchError(f"method {name!r}: config {f.name}={value!r} {problem}: choose {valid} "
                                   f"(the default is {_default(f)!r})")


def _field_problem(f: dataclasses.Field, value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        return "is not a valid choice"
    for kind, bound in f.metadata.get("bounds", {}).items():
        if not isinstance(value, (int, float)):
            return "is not a number"
        if not _WITHIN[kind](value, bound):
            return "is out of range"
    return None


_WITHIN = {"ge": lambda v, b: v >= b, "gt": lambda v, b: v > b, "le": lambda v, b: v <= b, "lt": lambda v, b: v < b}


def make_config(name: str, overrides: dict[str, str] | None = None, method: type[Method] | None = None) -> Any:
    """The Config of method ``name`` (the class ``method`` when given, else the registered
    one) with ``key=value`` string overrides parsed to the field types and checked against
    the declared ranges (:func:`check_config`)."""
    cls = (method or get_method(name)).Config
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, raw in (overrides or {}).items():
        if key not in fields:
            raise PerserbenchError(
                f"method {name!r} has no config option {key!r} (options: {', '.join(sorted(fields)) or 'none'})"
            )
        kwargs[key] = _parse_value(name, key, raw, hints[key])
    config = cls(**kwargs)
    check_config(name, config)
    return config


def _parse_value(method: str, key: str, raw: str, hint: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if raw.lower() in {"none", "null"}:
            return None
        hint = args[0]
    try:
        if hint is bool:
            if raw.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"true", "1", "yes"}
        if hint in (int, float, str):
            return hint(raw)
        if typing.get_origin(hint) is tuple:
            return tuple(typing.get_args(hint)[0](v) for v in raw.split(",") if v)
    except ValueError:
        raise PerserbenchError(f"method {method!r}: config {key}={raw!r} is not a valid {hint.__name__}") from None
    return raw


def create_method(name: str, overrides: dict[str, str] | None = None, seed: int = 0) -> Method:
    return get_method(name)(make_config(name, overrides), seed=seed)
