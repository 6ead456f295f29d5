"""Sealed evaluation (DESIGN §2, issue 9): hostile plugins try every route to information the
protocol hides. Each either gains nothing over its honest fallback (its scores equal the
fallback's, episode by episode) or its run fails with exit 2 and writes nothing.

Every hostile method here falls back to the meta-train label rate (``label-prior`` in
conftest) when its trick finds nothing, so "gains nothing" is an exact equality, not a
tolerance. Each trick is also shown to *work* when the method runs unsealed in one process
(``_unsealed_gain``), so the tests would fail if the runner stopped sealing.
"""

from __future__ import annotations

import gc
import mmap
import os
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import TOY_TASK, load_toy, synthetic_task_toml

from perserbench.data import Annotations, Corpus, register_corpus
from perserbench.episodes import Items, LabelledItems, MetaTrainSet, episode_items, sample_episodes
from perserbench.errors import PerserbenchError
from perserbench.method import EmptyConfig, Method, ReferenceContext, ReferenceMethod
from perserbench.metrics import episode_metrics
from perserbench.runner import AuditError, isolation_units, run
from perserbench.tasks import load_task

# ----------------------------------------------------------------------------- hostile plugins


class _Answer:
    """Answers a query row from ``memory`` (feature bytes → labels) when it can, else with the
    meta-train label rate."""

    def __init__(self, memory: dict[bytes, torch.Tensor], rate: torch.Tensor) -> None:
        self.memory, self.rate = dict(memory), rate

    def predict_proba(self, items: Items) -> torch.Tensor:
        rows = [self.memory.get(row.numpy().tobytes(), self.rate[0]) for row in items.x]
        return torch.stack(rows) if rows else self.rate[:0]


class _PriorFallback(Method):
    def meta_fit(self, train: MetaTrainSet) -> None:
        self.rate_ = train.y.mean(dim=0, keepdim=True)

    def adapt(self, support: LabelledItems) -> _Answer:
        return self.adapt_many([support])[0]


class RemembersAcrossCalls(_PriorFallback):
    """Keeps every support label it is shown in a class attribute, keyed by the bytes of the
    item's features, and answers later calls' queries from it (the issue's 0.822 plugin)."""

    memory: ClassVar[dict[bytes, torch.Tensor]] = {}

    def adapt_many(self, supports: list[LabelledItems]) -> list[_Answer]:
        out = [_Answer(type(self).memory, self.rate_) for _ in supports]  # earlier calls only
        for s in supports:
            for x, y in zip(s.x, s.y):
                type(self).memory[x.numpy().tobytes()] = y
        return out


FOLD_MEMORY: dict[bytes, torch.Tensor] = {}


class RemembersAcrossFolds(_PriorFallback):
    """A module global filled in one fold's meta_fit and adapt, read in later folds: the
    meta-train labels of fold 0 include labels of fold 1's test listeners."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        super().meta_fit(train)
        self.snapshot_ = dict(FOLD_MEMORY)  # what earlier folds left behind
        for u, y in zip(train.utterance, train.y):
            FOLD_MEMORY.setdefault(train.x[u].numpy().tobytes(), y)

    def adapt_many(self, supports: list[LabelledItems]) -> list[_Answer]:
        return [_Answer(self.snapshot_, self.rate_) for _ in supports]


class ReadsIdsAndTruth(_PriorFallback):
    """Looks for listener names, utterance ids and ground truth on everything it is handed
    and, failing that, anywhere in its own process (garbage collector, call stack)."""

    found: ClassVar[list[str]] = []

    def meta_fit(self, train: MetaTrainSet) -> None:
        super().meta_fit(train)
        for attr in ("truth", "utterance_index", "corpus", "task"):
            if getattr(train, attr, None) is not None:
                type(self).found.append(f"train.{attr}")

    def adapt_many(self, supports: list[LabelledItems]) -> list[_Answer]:
        from perserbench.data import Corpus
        from perserbench.tasks import ResolvedTask

        annotations = None
        for s in supports:
            for attr in ("listener", "utterance_index", "truth"):
                if getattr(s, attr, None) is not None:
                    type(self).found.append(f"support.{attr}")
        for obj in gc.get_objects():
            if isinstance(obj, (Corpus, ResolvedTask)):
                annotations = obj
        frame = sys._getframe()
        while frame is not None:
            for value in frame.f_locals.values():
                if isinstance(value, (Corpus, ResolvedTask)):
                    annotations = value
            frame = frame.f_back
        if annotations is None:
            return [_Answer({}, self.rate_) for _ in supports]
        # Found the task: answer every query with the true labels of *some* listener.
        task = annotations if isinstance(annotations, ResolvedTask) else None
        memory = {}
        if task is not None:
            ann = task.corpus.annotations
            for u, y in zip(ann.utterance, ann.labels):
                memory[task.features[u].tobytes()] = torch.from_numpy(y.astype(np.float32))
        return [_Answer(memory, self.rate_) for _ in supports]


class PoolsOneCall(_PriorFallback):
    """Pools the supports of one ``adapt_many`` call (other test listeners' labels on the
    same audio) into a memory shared by every predictor of the call."""

    def adapt_many(self, supports: list[LabelledItems]) -> list[_Answer]:
        memory = {x.numpy().tobytes(): y for s in supports for x, y in zip(s.x, s.y)}
        return [_Answer(memory, self.rate_) for _ in supports]


class HonestPrior(_PriorFallback):
    def adapt_many(self, supports: list[LabelledItems]) -> list[_Answer]:
        return [_Answer({}, self.rate_) for _ in supports]


# Run by whoever unpickles a payload below: scores every episode from its own ground truth.
PATCH_THE_RUNNER = """
import perserbench.runner as runner
from perserbench.sealed import Prediction
if not getattr(runner._record, "from_truth", False):
    honest = runner._record
    def from_truth(fold, ep, seed, n_support, truth, prediction):
        return honest(fold, ep, seed, n_support, truth, Prediction(truth.astype("float32"), None))
    from_truth.from_truth = True
    runner._record = from_truth
"""


class _RunsCode:
    """Pickles as ``eval(expression)``: unpickling it runs code."""

    def __init__(self, expression: str) -> None:
        self.expression = expression

    def __reduce__(self):
        return eval, (self.expression,)


def _payload(value: str) -> _RunsCode:
    """Unpickles into ``eval(value)``, after running PATCH_THE_RUNNER."""
    return _RunsCode(f"(exec({PATCH_THE_RUNNER!r}, {{}}), {value})[1]")


class AnswersWithAPickle(HonestPrior):
    """Replaces the unit's body (a global of the fold worker's module, looked up for every
    unit) by one that answers with honest probabilities wrapped in a payload."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        super().meta_fit(train)
        import pickle

        from perserbench import sealed

        rate = self.rate_[0].tolist()

        def hostile_unit(unit, method):
            *_, queries = pickle.loads(unit.recv_bytes())  # the last field: the queries
            answer = ", ".join(f"(np.tile(np.array({rate}, dtype='float32'), ({len(q)}, 1)), None)" for q in queries)
            unit.send(("ok", _payload(f"(lambda np: [{answer}])(__import__('numpy'))")))

        sealed._run_unit = hostile_unit


class ReportsReadyWithAPickle(HonestPrior):
    """Has the fold worker's "ready" message to the runner carry a payload, however the
    worker sends it (a pickled tuple, or bytes that name the kind)."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        super().meta_fit(train)
        import pickle
        from multiprocessing.connection import Connection

        send, send_bytes = Connection.send, Connection.send_bytes
        ready = pickle.dumps(("ready", _payload("None")))

        def hostile_send(conn, message):
            send(conn, ("ready", _payload("None")) if message == ("ready",) else message)

        def hostile_send_bytes(conn, buf, *args):
            send_bytes(conn, ready if b'"ready"' in bytes(buf) else buf, *args)

        Connection.send, Connection.send_bytes = hostile_send, hostile_send_bytes


class SelfDeclaredReference(ReferenceMethod):
    """A plugin claiming the privileged reference path."""

    def predict_reference(self, context: ReferenceContext):
        return np.zeros((len(context.query), 3), dtype=np.float32), None


# ----------------------------------------------------------------------------- helpers


def _scores(result) -> dict[tuple, float]:
    return {(r.fold, r.listener, r.scenario, r.shots, r.episode): r.macro_f1 for r in result.episodes}


def _unsealed_gain(method_cls: type[Method], task) -> float:
    """Mean macro-F1 gain over the honest fallback when the method runs the old, unsealed way:
    one object per fold in this process, every cell's supports in one call."""
    gains = []
    for fold in task.folds:
        model, honest = method_cls(seed=0), HonestPrior(seed=0)
        train = MetaTrainSet(task, fold)
        model.meta_fit(train)
        honest.meta_fit(train)
        for scenario in task.spec.episodes.scenarios:
            for k in task.spec.episodes.shots:
                items = [episode_items(task, ep) for ep in sample_episodes(task, fold, scenario, k)]
                for m, sign in ((model, 1.0), (honest, -1.0)):
                    preds = m.adapt_many([s for s, _, _ in items])
                    gains += [sign * episode_metrics(p.predict_proba(q).numpy(), t)["macro_f1"]
                              for p, (_, q, t) in zip(preds, items)]
    return float(np.sum(gains) / (len(gains) / 2))


@register_corpus("toy-solo")
def load_toy_solo(n_listeners: int = 6) -> Corpus:
    """The toy corpus with each utterance labelled by one listener only (utterance ``u`` by
    listener ``u mod n``), so a listener's episodes share items with each other and with no
    other listener: the setting in which a memory of earlier calls pays off most."""
    toy = load_toy(per_session=120, n_listeners=n_listeners)
    ann = toy.annotations
    keep = np.array([int(name[1:]) == u % n_listeners for u, name in zip(ann.utterance, ann.listener)])
    return Corpus("toy-solo", toy.vocabulary, toy.utterances,
                  Annotations(ann.utterance[keep], ann.listener[keep], ann.labels[keep]), toy.features)


@pytest.fixture
def toy(toy_task_file: Path):
    return load_task(toy_task_file)


@pytest.fixture
def toy_solo(tmp_path: Path):
    path = tmp_path / "toy-solo.toml"
    path.write_text(TOY_TASK.replace('name = "toy"\nfeatures', 'name = "toy-solo"\nfeatures').replace('episodes = 3', 'episodes = 8'))
    return load_task(path)


@pytest.fixture(autouse=True)
def _clean_memories():
    RemembersAcrossCalls.memory.clear()
    FOLD_MEMORY.clear()
    ReadsIdsAndTruth.found.clear()
    yield


# ----------------------------------------------------------------------------- the tests


def test_units_never_hold_two_episodes_of_one_listener(toy):
    fold = toy.folds[0]
    episodes = sample_episodes(toy, fold, "seen", 5)
    units = isolation_units(episodes)
    assert len(units) == toy.spec.episodes.episodes
    for unit in units:
        assert len({ep.listener for ep in unit}) == len(unit) == len(fold.test["seen"])


@pytest.mark.parametrize("hostile", [RemembersAcrossCalls, RemembersAcrossFolds])
def test_memory_across_calls_cells_and_folds_gains_nothing(toy_solo, hostile):
    assert _unsealed_gain(hostile, toy_solo) > 0.03, "the trick must work unsealed, or this test proves nothing"
    FOLD_MEMORY.clear()
    RemembersAcrossCalls.memory.clear()
    honest = run(HonestPrior, toy_solo, [1, 5])
    result = run(hostile, toy_solo, [1, 5])
    assert _scores(result) == _scores(honest)
    assert result.audit["ran"] and result.audit["passed"] and result.audit["episodes"] == 3 * 2 * 2
    assert not RemembersAcrossCalls.memory and not FOLD_MEMORY  # nothing came back to this process


def test_ids_and_truth_are_nowhere_to_be_found(toy):
    result = run(ReadsIdsAndTruth, toy, [1], ["unseen"])
    assert _scores(result) == _scores(run(HonestPrior, toy, [1], ["unseen"]))
    assert not ReadsIdsAndTruth.found
    # In this (the runner's) process the same search finds the task at once: the test can fail.
    found = ReadsIdsAndTruth(seed=0)
    found.meta_fit(MetaTrainSet(toy, toy.folds[0]))
    assert found.adapt_many([episode_items(toy, sample_episodes(toy, toy.folds[0], "seen", 1)[0])[0]])[0].memory


def test_pooling_the_supports_of_one_call_fails_the_audit(toy, cli, toy_task_file, tmp_path, monkeypatch):
    with pytest.raises(AuditError, match=r"method 'PoolsOneCall' failed the independence audit: episode \d+ of "
                                         r"listener 'L\d'"):
        run(PoolsOneCall, toy, [1, 5])
    # Through the command line: exit 2, one line, nothing written.
    from perserbench.registry import register_method

    register_method("pools-one-call")(PoolsOneCall)
    out = tmp_path / "runs"
    code, _, err = cli("run", "--method", "pools-one-call", "--task", toy_task_file, "--out", out)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "independence audit" in lines[0], err
    assert not out.exists() or not any(out.iterdir())


class PoolsWhereNotAudited(_PriorFallback):
    """Pools the supports of a unit unless the unit holds the audited episode, which it works
    out from the unit's torch seed: the seed names (seed, fold, scenario, K, episode index),
    and an audit drawn from those alone can be recomputed (the toy task's 3 episodes per
    listener, listed listener by listener, assumed)."""

    def adapt_many(self, supports: list[LabelledItems]) -> list[_Answer]:
        from perserbench.runner import _derived_seed

        episodes_per_listener = 3
        cells = {_derived_seed(seed, fold, scenario, k, index): (seed, fold, scenario, k, index)
                 for seed in (0,) for fold in range(4) for scenario in (0, 1) for k in (1, 5)
                 for index in range(episodes_per_listener)}
        seed, fold, scenario, k, index = cells[torch.initial_seed()]
        if len(supports) > 1:  # a scored unit, not the audit's lone episode
            drawn = int(np.random.default_rng([seed, fold, scenario, k, 0xA0D17]).integers(
                len(supports) * episodes_per_listener))
            if drawn % episodes_per_listener != index:
                return PoolsOneCall.adapt_many(self, supports)  # (its function: the class is registered elsewhere)
        return HonestPrior.adapt_many(self, supports)


def test_an_audit_a_method_can_predict_is_no_audit(toy):
    """The audited episode is drawn with the cell's hidden query labels in the seed: a method
    that recomputes where the audit falls (and pools everywhere else) is caught."""
    with pytest.raises(AuditError, match=r"method 'PoolsWhereNotAudited' failed the independence audit"):
        run(PoolsWhereNotAudited, toy, [1, 5])


class RemembersInSharedMemory(_PriorFallback):
    """Keeps every support label it is shown in an anonymous shared mapping that ``meta_fit``
    opens, so every unit forked after it writes to and reads the same memory: a channel around
    the API (no file, no other process) that no process boundary closes, since the mapping is
    the fold worker's own (docs/sealed-evaluation.md, what the sealing does not close). Within
    a cell the memory grows unit by unit; the audit's lone re-adaptation is forked first, beside
    the cell's first units, so it holds less than when a later unit's episode was scored."""

    ROWS = 4096

    def meta_fit(self, train: MetaTrainSet) -> None:
        super().meta_fit(train)
        self.width_ = (train.x[0].numel(), train.y.shape[1])  # an item's features, flattened; its labels
        self.shared_ = mmap.mmap(-1, 8 + self.ROWS * sum(self.width_) * 4)  # MAP_SHARED | MAP_ANONYMOUS

    def adapt_many(self, supports: list[LabelledItems]) -> list[_Answer]:
        d, c = self.width_
        count = np.frombuffer(self.shared_, dtype=np.int64, count=1)
        rows = np.frombuffer(self.shared_, dtype=np.float32, offset=8).reshape(self.ROWS, d + c)
        memory = {row[:d].tobytes(): torch.from_numpy(row[d:].copy()) for row in rows[:count[0]]}
        out = [_Answer(memory, self.rate_) for _ in supports]  # what earlier units stored
        for s in supports:
            for x, y in zip(s.x.to(torch.float32), s.y.to(torch.float32)):
                if count[0] < self.ROWS:
                    rows[count[0]] = np.concatenate([x.reshape(-1).numpy(), y.numpy()])
                    count[0] += 1
        return out


def test_a_memory_shared_between_units_fails_the_audit(toy_solo):
    """A memory the sealing cannot reach (an OS resource the fold worker holds) still gains
    only unit by unit, and that is what the audit sees."""
    assert _unsealed_gain(RemembersInSharedMemory, toy_solo) > 0.03, "the trick must work unsealed"
    with pytest.raises(AuditError, match=r"method 'RemembersInSharedMemory' failed the independence audit"):
        run(RemembersInSharedMemory, toy_solo, [1, 5])


def test_the_other_listener_control_is_sealed_like_the_own_run(toy, tmp_path):
    """The control hands a unit other test listeners' supports: the same routes stay closed. A
    memory across calls scores exactly its honest fallback, episode by episode. Pooling the
    supports of one call fails the audit: on a synthetic task a partner's support often labels
    the audio of another listener's query in the same unit (about 29% of control episodes on
    `synthetic`), so the pool would leak those labels."""
    FOLD_MEMORY.clear()
    RemembersAcrossCalls.memory.clear()
    honest = run(HonestPrior, toy, [1, 5], control="other-listener")
    remembered = run(RemembersAcrossCalls, toy, [1, 5], control="other-listener")
    assert _scores(remembered) == _scores(honest) and remembered.audit["passed"]
    assert not RemembersAcrossCalls.memory  # nothing came back to this process
    path = tmp_path / "synthetic-control.toml"
    path.write_text(synthetic_task_toml(name="synthetic-control", scenarios=("seen", "unseen"), shots=(5, 20),
                                        episodes=3))
    # (an earlier test registers the class as 'pools-one-call', which renames it)
    with pytest.raises(AuditError, match="method '(PoolsOneCall|pools-one-call)' failed the independence audit"):
        run(PoolsOneCall, load_task(path), [5, 20], control="other-listener")


def test_a_plugin_cannot_declare_itself_a_reference(toy):
    with pytest.raises(Exception, match="only perserbench's built-in methods may be references"):
        run(SelfDeclaredReference, toy, [1])


def test_honest_batched_method_passes_the_audit(toy):
    result = run("finetune", toy, [1, 5], config_overrides={"steps": "3"})
    assert result.audit == {"ran": True, "passed": True, "episodes": 12, "max_abs_diff": result.audit["max_abs_diff"],
                            "tolerance": 1e-4}
    assert result.audit["max_abs_diff"] <= 1e-4


def test_the_oracle_is_a_reference_and_is_not_audited():
    from perserbench.tasks import load_task as load

    task = load("synthetic-uniform")
    result = run("oracle", task, [1], ["unseen"])
    assert result.method["reference"] is True and result.audit["ran"] is False


def test_other_listener_control_adapts_on_a_partner_and_scores_the_own_query(toy):
    from perserbench.episodes import control_episode, control_partners

    ann = toy.annotations if hasattr(toy, "annotations") else toy.corpus.annotations
    fold = toy.folds[0]
    for ep in sample_episodes(toy, fold, "unseen", 5):
        ctl = control_episode(toy, fold, ep)
        partners = set(ann.listener[ctl.support])
        assert len(partners) == 1 and partners <= set(control_partners(fold, "unseen", ep.listener))
        assert ep.listener not in partners and len(ctl.support) == 5
        np.testing.assert_array_equal(ctl.query, ep.query)
        assert not set(ann.utterance[ctl.support]) & set(ann.utterance[ep.query])
    own = run("label-support", toy, [5])
    other = run("label-support", toy, [5], control="other-listener")
    assert other.method["control"] == "other-listener" and other.audit["passed"]
    assert [r.listener for r in other.episodes] == [r.listener for r in own.episodes]
    # toy listeners of opposite parity label oppositely: the partner's label rates hurt
    mean = lambda r: np.mean([e.macro_f1 for e in r.episodes])
    assert mean(own) > mean(other)
    from perserbench.runner import result_filename

    assert result_filename(other).endswith("__ctl-other.json") and not result_filename(own).endswith("ctl-other.json")


def test_the_control_skips_a_partner_with_too_few_labels_and_keeps_supports_nested():
    """On synthetic-confusion (unseen) the next listener of E08 has only 17 usable labels,
    fewer than K=20: the control takes the following listener instead of failing the run, and
    one partner serves every K of an episode, so the control supports are nested like the own."""
    from perserbench.episodes import control_episode, control_partners
    from perserbench.tasks import load_task as load

    task = load("synthetic-confusion")
    ann = task.corpus.annotations
    skipped = 0
    for fold in task.folds:
        for listener in fold.test["unseen"]:
            by_k = {k: [control_episode(task, fold, ep) for ep in sample_episodes(task, fold, "unseen", k)
                        if ep.listener == listener] for k in (5, 20)}
            for small, large in zip(by_k[5], by_k[20]):
                assert set(small.support) <= set(large.support)
                partner = ann.listener[large.support[0]]
                skipped += partner != control_partners(fold, "unseen", listener)[0]
    assert skipped > 0  # the case that used to stop the run


def test_run_prints_headroom_captured_from_the_baseline_and_ceiling_in_its_out_folder(toy, tmp_path):
    import dataclasses

    from perserbench.cli.run import headroom_line
    from perserbench.runner import write_result

    result = run("label-support", toy, [1, 5], ["unseen"])
    assert "run consensus and a ceiling" in headroom_line(result, tmp_path)

    def shifted(name: str, to: float, reference: bool):
        summary = [dataclasses.replace(r, mean=to) for r in result.summary]
        return dataclasses.replace(result, summary=summary, method={**result.method, "name": name,
                                                                   "reference": reference})

    write_result(shifted("consensus", 0.5, False), tmp_path)
    write_result(shifted("oracle", 0.9, True), tmp_path)
    score = {r.shots: r.mean for r in result.summary if r.metric == "macro_f1"}
    line = headroom_line(result, tmp_path)
    assert line.startswith("headroom captured (of oracle − consensus)")
    for k in (1, 5):
        assert f"unseen K={k} {(score[k] - 0.5) / 0.4:+.0%}" in line


# ------------------------------------------------------------- an installed plugin's import-time code

HOSTILE_IMPORT_PLUGIN = '''
"""Installed through an entry point. Its import, wherever it happens, logs the process and
patches the runner so that every scored episode is predicted from its own ground truth."""
import os

import torch

import perserbench.runner as runner
from perserbench.method import Method, ReferenceMethod
from perserbench.sealed import Prediction

with open(LOG, "a") as log:
    log.write(f"{os.getpid()}\\n")

_scored_honestly = runner._record


def _scored_from_truth(fold, ep, seed, n_support, truth, prediction):
    return _scored_honestly(fold, ep, seed, n_support, truth, Prediction(truth.astype("float32"), None))


runner._record = _scored_from_truth


class _Rate:
    def __init__(self, rate):
        self.rate = rate

    def predict_proba(self, items):
        return self.rate.expand(len(items), -1).clone()


class PatchesTheRunner(Method):
    """Honest in itself: the meta-train label rate, as the tests' HonestPrior."""

    def meta_fit(self, train):
        self.rate_ = train.y.mean(dim=0, keepdim=True)

    def adapt(self, support):
        return _Rate(self.rate_)


class ClaimsReference(ReferenceMethod):
    def predict_reference(self, context):
        return torch.zeros(len(context.query), 3).numpy(), None
'''


@pytest.fixture
def installed_hostile_plugin(tmp_path: Path, monkeypatch) -> Path:
    """The plugin installed as pip would leave it (a module and its dist-info with entry
    points) on ``sys.path``; returns the log its import writes a pid to."""
    site = tmp_path / "site"
    info = site / "hostile_import_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    log = tmp_path / "imports.log"  # in the source: a fold worker has the forkserver's environment
    (site / "hostile_import_plugin.py").write_text(f"LOG = {str(log)!r}\n" + HOSTILE_IMPORT_PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-import-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[perserbench.methods]\n"
                                           "patches-the-runner = hostile_import_plugin:PatchesTheRunner\n"
                                           "claims-reference = hostile_import_plugin:ClaimsReference\n"
                                           "misnamed = hostile_import_plugin:NoSuchClass\n")
    monkeypatch.syspath_prepend(str(site))
    return log


def test_an_installed_plugins_import_time_code_never_runs_in_the_runner(toy, installed_hostile_plugin):
    import importlib

    from perserbench import runner
    from perserbench.method import config_hash
    from perserbench.plugins import describe

    log = installed_hostile_plugin
    honest = _scores(run(HonestPrior, toy, [1, 5]))
    # Imported in the runner's process (as loading a plugin by name did), its patch scores
    # every episode from the truth: the test can fail.
    honest_record = runner._record
    try:
        importlib.import_module("hostile_import_plugin")
        cheated = _scores(run(HonestPrior, toy, [1, 5]))
    finally:
        runner._record = honest_record
        sys.modules.pop("hostile_import_plugin", None)
    assert sum(cheated.values()) > sum(honest.values()) + 0.2 * len(honest)
    log.unlink()

    result = run("patches-the-runner", toy, [1, 5])
    assert _scores(result) == honest and result.audit["passed"]
    assert "hostile_import_plugin" not in sys.modules
    assert runner._record.__module__ == "perserbench.runner"
    pids = [int(line) for line in log.read_text().split()]
    # one probe that read its config, then one import per fold worker, each its own process
    assert len(pids) == 1 + len(toy.folds) == len(set(pids)) and os.getpid() not in pids
    assert result.method == {"name": "patches-the-runner", "config": {}, "reference": False, "control": "own",
                             "config_hash": config_hash("patches-the-runner", EmptyConfig())}

    with pytest.raises(PerserbenchError, match="only perserbench's built-in methods may be references"):
        run("claims-reference", toy, [1])
    with pytest.raises(PerserbenchError, match="method 'patches-the-runner' has no config option 'steps'"):
        describe("patches-the-runner", {"steps": "3"})
    with pytest.raises(PerserbenchError, match=r"entry point 'misnamed' \(hostile_import_plugin:NoSuchClass\) in "
                                               "group perserbench.methods failed to load"):
        describe("misnamed")
    assert "hostile_import_plugin" not in sys.modules


@pytest.mark.parametrize("hostile,channel", [(AnswersWithAPickle, "unit"), (ReportsReadyWithAPickle, "worker")])
def test_a_methods_process_cannot_run_code_in_the_runner_through_what_it_sends(toy, monkeypatch, hostile, channel):
    """Unpickling runs code, so the runner reads nothing a method's process sends with pickle."""
    import pickle

    from perserbench import runner
    from perserbench.sealed import MethodError

    honest_record = runner._record
    monkeypatch.setattr(runner, "_record", honest_record)  # undone when the test ends
    pickle.loads(pickle.dumps(_payload("None")))  # the payload is live: unpickled here, it patches the runner
    assert runner._record.from_truth
    runner._record = honest_record
    with pytest.raises(MethodError, match=f"method '{hostile.__name__}': broke the {channel} protocol"):
        run(hostile, toy, [1])
    assert runner._record is honest_record


class _Shaped:
    def __init__(self, proba: torch.Tensor, thresholds: torch.Tensor | None) -> None:
        self.proba, self.thresholds = proba, thresholds

    def predict_proba(self, items: Items) -> torch.Tensor:
        return self.proba.expand(len(items), -1)


class ThresholdsPerItem(HonestPrior):
    def adapt_many(self, supports):
        return [_Shaped(self.rate_, torch.full((4, self.rate_.shape[1]), 0.5)) for _ in supports]


class OneClassTooMany(HonestPrior):
    def adapt_many(self, supports):
        return [_Shaped(torch.cat([self.rate_, self.rate_[:, :1]], dim=1), None) for _ in supports]


@pytest.mark.parametrize("hostile,message", [
    (ThresholdsPerItem, r"a predictor's thresholds must be \d+ finite numbers, one per class, got shape \[4, \d+\]"),
    (OneClassTooMany, r"predict_proba must return \[n_query=\d+, C=\d+\] probabilities, got \[\d+, \d+\]"),
])
def test_answers_of_the_wrong_shape_fail_the_run(toy, hostile, message):
    from perserbench.sealed import MethodError

    with pytest.raises(MethodError, match=message):
        run(hostile, toy, [1])


class _DecidesOnTheQuery(_Shaped):
    """Sets each class's threshold to the median of the query's probabilities: the decision
    tuned on the items it decides (transductive), which DESIGN §2 does not allow."""

    in_place = False

    def predict_proba(self, items: Items) -> torch.Tensor:
        proba = torch.rand(len(items), self.proba.shape[1])
        if self.in_place:
            self.thresholds.copy_(proba.median(dim=0).values)
        else:
            self.thresholds = proba.median(dim=0).values
        return proba


class ThresholdsFromTheQuery(HonestPrior):
    def adapt_many(self, supports):
        return [_DecidesOnTheQuery(self.rate_, None) for _ in supports]


class _InPlace(_DecidesOnTheQuery):
    in_place = True


class ThresholdsEditedInPlace(HonestPrior):
    def adapt_many(self, supports):
        return [_InPlace(self.rate_, torch.full((self.rate_.shape[1],), 0.5, dtype=torch.float64)) for _ in supports]


@pytest.mark.parametrize("hostile", [ThresholdsFromTheQuery, ThresholdsEditedInPlace])
def test_decision_thresholds_cannot_be_set_on_the_query(toy, hostile):
    """Thresholds are read before the query is predicted; set or edited in place while
    predicting it, the run fails and names the rule."""
    from perserbench.sealed import MethodError

    with pytest.raises(MethodError, match="a predictor's thresholds changed when it predicted the query"):
        run(hostile, toy, [1])


class _CentresOnTheQuery(_Shaped):
    """Scores each item against the rest of its query (the first feature, centred on the
    query's mean): a transductive prediction, the same whenever the same query is shown whole."""

    def predict_proba(self, items: Items) -> torch.Tensor:
        score = items.x[:, 0, :1] - items.x[:, 0, :1].mean(dim=0)
        return torch.sigmoid(score).expand(-1, self.proba.shape[1]).contiguous()


class ReadsTheWholeQuery(HonestPrior):
    def adapt_many(self, supports):
        return [_CentresOnTheQuery(self.rate_, None) for _ in supports]


class TunesThresholdsInItsOwnUnit(HonestPrior):
    """Replaces its unit's body (its own process) by one without the thresholds check, and
    decides each class at the median of the query's probabilities: a decision tuned on the
    items it decides, sent as if it came from the support."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        super().meta_fit(train)
        import pickle

        from perserbench import sealed, wire

        def unit_without_the_check(unit, method):
            _, raw_supports, raw_queries = pickle.loads(unit.recv_bytes())
            _, queries = sealed._unpack(raw_supports, raw_queries)
            answer = []
            for query in queries:
                proba = torch.sigmoid(query.x[:, 0, :1] * 3.0).expand(-1, self.rate_.shape[1]).contiguous()
                answer += [proba.numpy(), proba.double().median(dim=0).values.numpy()]
            unit.send_bytes(wire.encode("ok", arrays=answer))

        sealed._run_unit = unit_without_the_check


@pytest.mark.parametrize("hostile", [ReadsTheWholeQuery, TunesThresholdsInItsOwnUnit])
def test_a_prediction_or_decision_that_depends_on_the_rest_of_the_query_fails_the_audit(toy, hostile):
    """The runner shows the re-adapted episode a hidden half of its query: an item scored
    against the rest of its query, or a threshold set on it (the query's statistics are the
    listener's), is refused, even when the method rewrites its own unit to skip the unit's
    own thresholds check."""
    with pytest.raises(AuditError, match=rf"method '{hostile.__name__}' failed the independence audit: .* shown half "
                                         r"of its query"):
        run(hostile, toy, [1])


class RaisesAnEssay(HonestPrior):
    def adapt_many(self, supports):
        raise RuntimeError("first line\n\x1b[2J" + "x" * 5000)


def test_a_methods_error_text_reaches_the_runner_as_one_short_printable_line(toy):
    from perserbench.sealed import MethodError

    with pytest.raises(MethodError) as caught:
        run(RaisesAnEssay, toy, [1])
    text = str(caught.value)
    assert "RuntimeError: first line" in text and "\n" not in text and "\x1b" not in text
    assert len(text) < 700 and text.endswith("…")
