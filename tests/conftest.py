"""Shared fixtures: a tiny registered corpus (``toy``) and task specs built on it, so core
tests run in milliseconds and do not depend on the synthetic corpus's calibration."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from perserbench.data import Annotations, Corpus, Utterance, register_corpus
from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.method import Method
from perserbench.registry import register_method

TOY_LABELS = ("a", "b", "c")


@register_corpus("toy")
def load_toy(seed: int = 0, n_listeners: int = 6, per_session: int = 30, dim: int = 8) -> Corpus:
    """3 sessions × 2 speakers; every listener labels every utterance; labels follow the
    features' sign pattern, flipped for odd listeners (so listeners disagree)."""
    rng = np.random.default_rng(seed)
    utts, feats = [], []
    for s in range(1, 4):
        for i in range(per_session):
            spk = f"S{s}_{'FM'[i % 2]}"
            utts.append(Utterance(f"S{s}_{i:03d}", spk, f"S{s}"))
            feats.append(rng.normal(size=(2, dim)))
    features = np.asarray(feats, dtype=np.float32)
    rows_u, rows_l, rows_y = [], [], []
    for u in range(len(utts)):
        base = features[u, 0, :3] > 0
        for j in range(n_listeners):
            y = ~base if j % 2 else base.copy()
            if not y.any():
                y[int(np.argmax(features[u, 0, :3]))] = True
            rows_u.append(u)
            rows_l.append(f"L{j}")
            rows_y.append(y)
    ann = Annotations(np.array(rows_u), np.array(rows_l, dtype=object), np.array(rows_y, dtype=bool))
    return Corpus("toy", TOY_LABELS, tuple(utts), ann, {"toy": features})


TOY_TASK = """
name = "toy"
version = "0.1"
[corpus]
name = "toy"
features = "toy"
labels = ["a", "b", "c"]
[listeners]
folds = 3
seed = 1
[utterances]
split = "session"
heldout = ["S3"]
[episodes]
shots = [1, 5]
query = 8
min_query = 4
episodes = 3
seed = 7
"""


def synthetic_task_toml(*, name: str = "synthetic-small", version: str = "0.1", options: str = "",
                        folds: int = 2, listener_seed: int = 3, scenarios: tuple[str, ...] = ("unseen",),
                        shots: tuple[int, ...] = (1,), query: int = 10, min_query: int = 10, episodes: int = 2,
                        episode_seed: int = 5) -> str:
    """A cut-down task on the bundled synthetic corpus (``options``: the corpus options as a TOML
    inline table, e.g. ``'{ seed = 0, uniform = true }'``). Worker processes (the sealed
    runner's forkserver, spawned pools, Ray) do not import this test suite, so tests that need a
    corpus those workers can load use this rather than the ``toy`` corpus."""
    return "\n".join([
        f'name = "{name}"', f'version = "{version}"',
        "[corpus]", 'name = "synthetic"', 'features = "synthetic"',
        'labels = ["neutral", "happy", "sad", "angry", "frustrated", "excited"]',
        *([f"options = {options}"] if options else []),
        "[listeners]", f"folds = {folds}", f"seed = {listener_seed}",
        "[utterances]", 'split = "session"', 'heldout = ["Ses05"]',
        "[episodes]", f"scenarios = {json.dumps(list(scenarios))}", f"shots = {json.dumps(list(shots))}",
        f"query = {query}", f"min_query = {min_query}", f"episodes = {episodes}", f"seed = {episode_seed}", "",
    ])


@pytest.fixture
def toy_task_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.toml"
    path.write_text(TOY_TASK)
    return path


@pytest.fixture
def cli(monkeypatch, capsys):
    """``perserbench ...`` through the real entry point, in-process (so the ``toy`` corpus
    registered here is visible): returns (exit code, stdout, stderr)."""
    from perserbench.cli import main

    def invoke(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["perserbench", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


# Two reference methods without training, shared by the report and leaderboard tests: they
# give different, deterministic scores in milliseconds.
class _ConstantRate:
    def __init__(self, proba: torch.Tensor) -> None:
        self.proba = proba

    def predict_proba(self, items: Items) -> torch.Tensor:
        return self.proba.expand(len(items), -1).clone()


@register_method("label-prior")
class LabelPrior(Method):
    """Meta-train label rate per class; ignores the support set."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        self.rate_ = train.y.mean(dim=0, keepdim=True)

    def adapt(self, support: LabelledItems) -> _ConstantRate:
        return _ConstantRate(self.rate_)


@register_method("label-support")
class SupportRate(Method):
    """The listener's own label rate per class in the support set."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        pass

    def adapt(self, support: LabelledItems) -> _ConstantRate:
        return _ConstantRate(support.y.mean(dim=0, keepdim=True))


# The slowest files, slowest first (measured with ``--durations=0``; together about half the
# suite). ``make test`` hands whole files to its two workers in collection order
# (``--dist loadfile``), so a long file collected last would run alone at the end.
LONGEST_FIRST = ("test_leaderboard.py", "test_ray.py", "test_sealed.py", "test_report.py", "test_plugins.py",
                 "test_runner.py", "test_methods.py", "test_api.py")


# Libraries that start a thread pool per process (torch's intra-op pool, OpenBLAS, MKL) size
# it from these variables when they load.
THREAD_POOL_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pytest_configure(config: pytest.Config) -> None:
    """With pytest-xdist (``make test``: one worker per core), every worker and every process
    a test starts gets one thread. With a pool per core in each worker, the two workers' pools
    fight for the same cores, and an idle pool's threads spin before they sleep: measured on
    the 2-core CI machine, the suite used 398 CPU-s and 208 s with the default pools against
    352 CPU-s and 181 s with one thread each. Runs here before xdist starts its workers, which
    inherit the environment; a variable already set is left alone."""
    if getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        for var in THREAD_POOL_VARS:
            os.environ.setdefault(var, "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
    # Test modules define methods that run sealed: the forkserver imports them once, instead of
    # every fold worker importing its method's test module again (pytest, scipy: ~1 CPU-s each).
    from perserbench.sealed import preload

    modules = {item.module for item in items if getattr(item, "module", None) is not None}
    preload(*sorted(m.__name__ for m in modules if _defines_a_method(m)))


def _defines_a_method(module: object) -> bool:
    return any(isinstance(v, type) and issubclass(v, Method) and v.__module__ == module.__name__
               for v in vars(module).values())
