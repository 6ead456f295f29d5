import dataclasses

import pytest
from typer.testing import CliRunner

from perserbench.cli import app
from perserbench.errors import PerserbenchError
from perserbench.method import Method, config_hash
from perserbench.registry import (
    config_fields,
    create_method,
    get_method,
    make_config,
    method_names,
    register_method,
)


def test_builtins_are_registered():
    names = method_names()
    assert {"consensus", "oracle"} <= set(names)
    assert get_method("consensus").name == "consensus"


def test_unknown_method_lists_known_ones():
    with pytest.raises(PerserbenchError, match="unknown method 'nope'; known methods: .*consensus"):
        get_method("nope")


def test_config_overrides_are_parsed_to_field_types():
    cfg = make_config("consensus", {"epochs": "3", "lr": "0.01", "layer_weights": "false"})
    assert (cfg.epochs, cfg.lr, cfg.layer_weights) == (3, 0.01, False)
    with pytest.raises(PerserbenchError, match="layer_weights='maybe' is not a valid bool"):
        make_config("consensus", {"layer_weights": "maybe"})


def test_config_hash_depends_on_values():
    a = create_method("consensus")
    b = create_method("consensus", {"epochs": "3"})
    assert config_hash("consensus", a.config) != config_hash("consensus", b.config)
    assert config_hash("consensus", a.config) == config_hash("consensus", create_method("consensus").config)


def test_every_builtin_config_field_documents_its_default():
    for name in method_names():
        for f in config_fields(name):
            assert f.doc, f"{name}.{f.name} has no documented reason"


def test_register_requires_a_method_subclass_and_unique_names():
    with pytest.raises(TypeError):
        register_method("bad")(object)  # type: ignore[arg-type]

    class Other(Method):
        def meta_fit(self, train):  # pragma: no cover
            pass

        def adapt(self, support):  # pragma: no cover
            pass

    with pytest.raises(ValueError, match="already registered"):
        register_method("consensus")(Other)


def test_methods_command_lists_configs():
    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0
    assert "consensus" in result.output and "epochs" in result.output and "0.527/0.533/0.528" in result.output


def test_constructor_does_no_work():
    m = create_method("consensus", seed=3)
    assert m.seed == 3 and not hasattr(m, "model_")
    assert dataclasses.is_dataclass(m.config)


HOSTILE_PLUGIN = '''
import os
from perserbench.method import Method

open(os.environ["PLUGIN_IMPORT_LOG"], "a").write("imported\\n")  # import-time code: what a patch would do


class Hostile(Method):
    def meta_fit(self, train):
        pass

    def adapt(self, support):
        raise NotImplementedError
'''


def test_a_plugin_is_loaded_only_when_asked_for_by_name(tmp_path, monkeypatch):
    """Loading a plugin runs its import-time code in this process (for a run, the runner,
    beside the task and its truth): running a built-in, validating results and building the
    board must not load an installed plugin; its own name, or listing every method, does."""
    from importlib.metadata import EntryPoint, EntryPoints

    from perserbench import registry
    from perserbench.leaderboard.publish import builtin_methods

    (tmp_path / "hostile_plugin.py").write_text(HOSTILE_PLUGIN)
    log = tmp_path / "imports.log"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PLUGIN_IMPORT_LOG", str(log))
    ep = EntryPoint(name="hostile", value="hostile_plugin:Hostile", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: EntryPoints([ep]))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))
    monkeypatch.setattr(registry, "_tried", set())

    assert get_method("consensus").name == "consensus"
    assert "consensus" in builtin_methods() and "hostile" not in builtin_methods()
    with pytest.raises(PerserbenchError, match="unknown method 'nope'; known methods: .*hostile"):
        get_method("nope")  # the plugin's name is listed from its metadata, without loading it
    assert not log.exists(), "a plugin's code ran although nobody asked for it"

    assert get_method("hostile").__name__ == "Hostile"
    assert log.read_text() == "imported\n" and registry.method_source("hostile").startswith("plugin ")
    assert "hostile" in method_names() and log.read_text() == "imported\n"  # loaded once


SHADOWING_PLUGIN = '''
from perserbench.method import Method
from perserbench.registry import register_method


class NotConsensus(Method):
    def meta_fit(self, train):
        pass

    def adapt(self, support):
        raise NotImplementedError


@register_method("shadow-extra")
class Extra(NotConsensus):
    pass
'''


def test_a_plugin_named_like_a_builtin_leaves_the_builtin_in_place(tmp_path, monkeypatch):
    """An entry point named ``consensus`` registers nothing: the name stays the built-in's, and
    a run of it stays in process as a built-in's does. Whatever else the plugin's module
    registers while it loads is the plugin's, so its fold workers import it, not the runner."""
    from importlib.metadata import EntryPoint, EntryPoints

    from perserbench import registry

    (tmp_path / "shadowing_plugin.py").write_text(SHADOWING_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="consensus", value="shadowing_plugin:NotConsensus", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: EntryPoints([ep]))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))
    monkeypatch.setattr(registry, "_tried", set())

    assert "shadow-extra" in method_names()  # loads every plugin, this one included
    assert get_method("consensus").__module__ == "perserbench.methods.consensus"
    assert registry.method_source("consensus") == "perserbench.methods.consensus"
    assert not registry.is_plugin("consensus") and registry.is_plugin("shadow-extra")
    assert "shadowing_plugin" not in registry.registered_modules()
