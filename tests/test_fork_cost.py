"""What keeps sealed runs cheap (perserbench.sealed, perserbench.hugepages) changes no number:
the huge-page hint leaves every byte as it was, and fold workers start with the modules every
optimizer needs, and the module that defines their method, already imported by the forkserver
instead of importing them again."""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import torch

from perserbench.episodes import Items, LabelledItems, MetaTrainSet, episode_items, sample_episodes
from perserbench.hugepages import collapse_anonymous_memory
from perserbench.method import Method
from perserbench.plugins import PluginRecipe
from perserbench.registry import register_method
from perserbench.sealed import SealedMethod, method_modules, preload_modules

IMPORTED_IN = os.getpid()  # in a fold worker: the forkserver's pid when the forkserver imported this module


def test_collapsing_into_huge_pages_changes_no_byte():
    rng = np.random.default_rng(0)
    arrays = [rng.random(size) for size in (10, 1000, 3_000_000)]
    tensor = torch.randn(512, 1024)
    before = [a.copy() for a in arrays], tensor.clone()
    accepted = collapse_anonymous_memory()
    assert isinstance(accepted, int) and accepted >= 0
    assert all(np.array_equal(a, b) for a, b in zip(arrays, before[0]))
    assert torch.equal(tensor, before[1])


class _Probe:
    def __init__(self, flags: torch.Tensor) -> None:
        self.flags = flags

    def predict_proba(self, items: Items) -> torch.Tensor:
        return self.flags.expand(len(items), -1).clone()


class ReportsPreloadedModules(Method):
    """Answers, as the bits of its first class's 'probability', whether torch._dynamo and the
    forkserver's last preload were already imported when meta_fit started, whether the
    forkserver's objects were already frozen out of the garbage collector's reach (torch alone
    is over 10^5 objects), whether this module was imported by another process (the
    forkserver: it is found through the test folder, a path pytest adds at run time, and
    conftest asks for it), and whether the support's dtype was float32."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        self.flags_ = [float("torch._dynamo" in sys.modules), float("perserbench.forkserver_ready" in sys.modules),
                       float(gc.get_freeze_count() > 100_000), float(IMPORTED_IN != os.getpid())]

    def adapt(self, support: LabelledItems) -> _Probe:
        flags = [*self.flags_, float(support.x.dtype == torch.float32)]
        code = sum(flag * 2.0 ** -(i + 1) for i, flag in enumerate(flags))  # exact in float32
        return _Probe(torch.tensor([[code] + [0.0] * (support.y.shape[1] - 1)]))


def test_fold_workers_start_with_what_every_optimizer_imports(toy_task_file):
    from perserbench.tasks import load_task

    assert preload_modules()[-1] == "perserbench.forkserver_ready" and "torch._dynamo" in preload_modules()
    task = load_task(toy_task_file)
    fold = task.folds[0]
    support, query, _ = episode_items(task, sample_episodes(task, fold, "seen", 5)[0])
    with SealedMethod(ReportsPreloadedModules(seed=0), MetaTrainSet(task, fold), 0) as sealed:
        [prediction] = sealed.predict([support], [query], torch_seed=0)
    assert prediction.proba.shape == (len(query), support.y.shape[1])
    assert prediction.proba[0, 0] == 1.0 - 2.0 ** -5  # every flag set


class _Registered(Method):
    pass


def test_the_forkserver_imports_the_modules_of_the_run_and_of_registered_methods(monkeypatch):
    from perserbench import registry, sealed

    consensus = registry.get_method("consensus")
    monkeypatch.setattr(sealed, "_EXTRA_PRELOAD", ["my_plugin_helpers"])
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_SOURCES", {})
    register_method("registered-here")(_Registered)
    assert method_modules(ReportsPreloadedModules(seed=0)) == [__name__, "my_plugin_helpers"]
    main_class = type("InMain", (ReportsPreloadedModules,), {"__module__": "__main__"})  # travels by value: nothing to import
    assert method_modules(main_class(seed=0)) == [__name__, "my_plugin_helpers"]
    monkeypatch.setattr(registry, "_REGISTRY", {"consensus": consensus})
    assert method_modules(main_class(seed=0)) == ["perserbench.methods.consensus", "my_plugin_helpers"]
    # An installed plugin, even once loaded here, is imported by its own fold workers only:
    # the forkserver serves every run of the process.
    plugin_class = type("FromPlugin", (_Registered,), {"__module__": "some_installed_plugin"})
    monkeypatch.setitem(registry._REGISTRY, "from-plugin", plugin_class)
    monkeypatch.setitem(registry._SOURCES, "from-plugin", "plugin some-installed-plugin")
    recipe = PluginRecipe("from-plugin", (), 0, "0" * 12)
    assert method_modules(recipe) == ["perserbench.methods.consensus", "my_plugin_helpers"]
