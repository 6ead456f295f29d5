"""Installed plugins never run in the runner (DESIGN §2, sealed evaluation).

Importing a module runs its top-level code. The runner holds the task, the query labels and a
synthetic corpus's ground truth, so a plugin imported there could patch the runner itself
(hand its own units the truth, rewrite the scores) before any sealing starts, and neither the
process boundary nor the independence audit would see it. Yet the runner needs three facts
about the method before any worker starts: its resolved config (for the result and its file
name), the config's hash, and whether it claims to be a reference.

So a plugin named by an entry point (:func:`~perserbench.registry.is_plugin`) is handled in
two places only, neither of which ever holds a task:

* :func:`describe` asks a **probe**: a fresh interpreter that loads the plugin, parses the
  ``--config`` overrides with the registry's own rules and answers with a
  :class:`MethodDescription` (JSON in a file of its own), then exits. Bad overrides, an unknown
  option or a plugin that fails to import come back as the same one-line errors as for a
  built-in.
* Each fold worker receives a :class:`PluginRecipe` instead of a pickled method and imports
  the plugin itself (:meth:`PluginRecipe.build`), after it was forked from the forkserver. The
  forkserver is shared by every run of the process (a sweep), so it never imports a plugin: a
  plugin's import-time code cannot reach another method's workers.

A plugin therefore runs where its own ``meta_fit`` and ``adapt`` run, with what they may see,
and nowhere else. The cost is one probe per (plugin, config) and process (about 2 s: the
probe imports torch) and the plugin's import once per fold worker. Built-ins and methods
registered in the caller's own code (a test module, a notebook) are the caller's code and are
handled in process as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from perserbench.errors import PerserbenchError

PROBE_ENV = "PERSERBENCH_PLUGIN_PROBE"
PROBE_TIMEOUT_S = 600


@dataclass(frozen=True)
class MethodDescription:
    """What the runner needs to know of a method before any worker starts."""

    name: str
    module: str  # where the method's class is defined
    config: dict[str, Any]  # the resolved config, as the result records it (config_dict)
    config_hash: str
    reference: bool
    plugin: bool


@dataclass(frozen=True)
class PluginRecipe:
    """How a fold worker builds a plugin's method for one (seed, fold): the plugin's name,
    the ``--config`` overrides and the seed, plus the config hash the probe reported, which
    the worker checks against what it builds (a plugin whose config differs between two
    imports would otherwise record one config and run another)."""

    name: str
    overrides: tuple[tuple[str, str], ...]
    seed: int
    config_hash: str

    def build(self) -> Any:
        """Import the plugin and instantiate its method; runs in the fold worker only."""
        from perserbench.method import config_hash, is_reference
        from perserbench.registry import create_method

        method = create_method(self.name, dict(self.overrides), seed=self.seed)
        if is_reference(method):
            raise PerserbenchError(f"plugin {self.name!r} declares itself a reference; only perserbench's built-in "
                                   "methods may be references")
        if config_hash(self.name, method.config) != self.config_hash:
            raise PerserbenchError(f"plugin {self.name!r} resolved a different config in its worker than in its probe "
                                   "(its Config depends on something besides the overrides)")
        return method


def describe(name: str, overrides: dict[str, str] | None = None) -> MethodDescription:
    """The config, hash and role of the registered method ``name`` with ``overrides`` applied.
    An installed plugin is described by a probe process and never imported here; anything
    else in this process. Raises the registry's one-line errors for an unknown name or a bad
    override."""
    from perserbench import registry
    from perserbench.method import config_dict, config_hash, is_reference

    if registry.is_plugin(name):
        return _probe(name, tuple(sorted((overrides or {}).items())))
    config = registry.make_config(name, overrides)
    cls = registry.get_method(name)
    return MethodDescription(name, cls.__module__, config_dict(config), config_hash(name, config), is_reference(cls),
                             plugin=False)


@lru_cache(maxsize=32)
def _probe(name: str, overrides: tuple[tuple[str, str], ...]) -> MethodDescription:
    """Describe plugin ``name`` in a fresh interpreter with this process's ``sys.path``."""
    with tempfile.TemporaryDirectory(prefix="perserbench-probe-") as folder:
        answer = Path(folder) / "answer.json"
        request = {"name": name, "overrides": dict(overrides), "sys_path": [str(p) for p in sys.path],
                   "answer": str(answer)}
        try:
            done = subprocess.run([sys.executable, "-c", "import perserbench.plugins as p; p.probe_main()"],
                                  env={**os.environ, PROBE_ENV: json.dumps(request)}, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise PerserbenchError(f"plugin {name!r}: loading it took longer than {PROBE_TIMEOUT_S} s") from None
        if not answer.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PerserbenchError(f"plugin {name!r}: the process that loads it to read its config exited with code "
                                   f"{done.returncode} ({last}); run `perserbench methods` to see the error")
        reply = json.loads(answer.read_text(encoding="utf-8"))
    if isinstance(reply, dict) and set(reply) == {"error"}:
        raise PerserbenchError(str(reply["error"]))
    types = {"name": str, "module": str, "config": dict, "config_hash": str, "reference": bool, "plugin": bool}
    if (not isinstance(reply, dict) or set(reply) != set(types) or reply["name"] != name or reply["plugin"] is not True
            or not all(isinstance(reply[key], kind) for key, kind in types.items())):
        raise PerserbenchError(f"plugin {name!r}: the process that loads it answered something that is not a "
                               "description of it (its code replaced the probe's answer)")
    return MethodDescription(**reply)


def probe_main() -> None:
    """The probe's body: load the plugin, describe it, write the answer, nothing else."""
    request = json.loads(os.environ.pop(PROBE_ENV))
    sys.path[:] = request["sys_path"]
    try:
        from perserbench import registry
        from perserbench.method import config_dict, config_hash, is_reference

        name = request["name"]
        cls = registry.load_plugin(name)
        config = registry.make_config(name, request["overrides"], cls)
        reply: dict[str, Any] = asdict(MethodDescription(name, cls.__module__, config_dict(config),
                                                         config_hash(name, config), is_reference(cls), plugin=True))
    except PerserbenchError as exc:
        reply = {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the plugin's own failure, reported in one line
        reply = {"error": f"plugin {request['name']!r} failed while loading: {type(exc).__name__}: {exc}"}
    partial = Path(request["answer"] + ".part")
    partial.write_text(json.dumps(reply), encoding="utf-8")
    partial.replace(request["answer"])
