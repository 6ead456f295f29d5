"""The Python API (issue 12): evaluate a registered name, a class or an instance; frames of a
result; the comparison report's tables; the command line goes through the same path."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import perserbench
from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.errors import PerserbenchError
from perserbench.method import Method
from perserbench.results import EpisodeRecord, ListenerRecord, RunResult, load_result
from perserbench.tasks import load_task

REPO = Path(__file__).resolve().parent.parent


class _Blend:
    def __init__(self, proba: torch.Tensor) -> None:
        self.proba = proba

    def predict_proba(self, items: Items) -> torch.Tensor:
        return self.proba.expand(len(items), -1).clone()


@dataclass
class ShrunkRatesConfig:
    strength: float = 50.0


class ShrunkRates(Method):
    """Not registered anywhere: the listener's support label rates shrunk toward the
    meta-train rates with ``strength`` pseudo-counts."""

    Config = ShrunkRatesConfig

    def meta_fit(self, train: MetaTrainSet) -> None:
        self.prior_ = train.y.mean(dim=0)

    def adapt(self, support: LabelledItems) -> _Blend:
        s = self.config.strength
        return _Blend(((support.y.sum(dim=0) + s * self.prior_) / (len(support) + s)).unsqueeze(0))


def _run(method, toy_task_file: Path, **kwargs) -> RunResult:
    return perserbench.evaluate(method, toy_task_file, shots=[5], scenarios="unseen", **kwargs)


def test_import_is_cheap_and_api_is_reexported():
    probe = "import sys, perserbench; assert 'torch' not in sys.modules and 'pandas' not in sys.modules; " \
            "from perserbench import evaluate, compare; import perserbench.api as a; " \
            "assert evaluate is a.evaluate and compare is a.compare; print('ok')"
    proc = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_evaluate_a_registered_name_a_class_and_an_instance(toy_task_file):
    by_name = _run("label-support", toy_task_file)
    by_class = _run(ShrunkRates, toy_task_file)
    by_instance = _run(ShrunkRates(ShrunkRatesConfig(strength=0.0)), toy_task_file)
    assert by_name.method_name == "label-support"
    assert by_class.method_name == by_instance.method_name == "ShrunkRates"
    assert by_class.method["config"] == {"strength": 50.0}
    assert by_instance.method["config"] == {"strength": 0.0}  # the instance's config is kept
    for result in (by_name, by_class, by_instance):
        assert result.scenarios == ["unseen"] and result.shots == [5] and result.audit_passed
        assert {r.shots for r in result.episodes} == {5} and {r.scenario for r in result.episodes} == {"unseen"}
    # strength 0 is exactly the support label rate: same predictions as label-support
    assert [r.macro_f1 for r in by_instance.episodes] == [r.macro_f1 for r in by_name.episodes]
    assert [r.macro_f1 for r in by_class.episodes] != [r.macro_f1 for r in by_name.episodes]


def test_evaluate_accepts_a_resolved_task_and_all_shots(toy_task_file):
    task = load_task(toy_task_file)
    result = perserbench.evaluate("label-prior", task, shots=None, scenarios=["seen"], seeds=1)
    assert result.shots == [1, 5] and result.scenarios == ["seen"] and result.seeds == [1]
    with pytest.raises(PerserbenchError, match="already resolved"):
        perserbench.evaluate("label-prior", task, corpus_options={"seed": 2})


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "nope"}, "unknown method 'nope'"),
    ({"scenarios": "sideways"}, "unknown scenario 'sideways'"),
    ({"shots": [3]}, "K=3 is not a shot count"),
    ({"shots": []}, "shots must be an integer or a non-empty list"),
    ({"method": ShrunkRates, "config": {"strength": "1"}}, "config overrides apply to registered method names"),
    ({"config": {"nope": 1}}, "has no config option 'nope'"),
])
def test_evaluate_bad_input_raises_one_line_error(toy_task_file, kwargs, message):
    kwargs = {"method": "label-prior", **kwargs}
    with pytest.raises(PerserbenchError, match=message) as info:
        perserbench.evaluate(kwargs.pop("method"), toy_task_file, **{"shots": [5], **kwargs})
    assert "\n" not in str(info.value)


def test_frames_have_one_row_per_episode_and_per_listener(toy_task_file):
    result = perserbench.evaluate("label-support", toy_task_file, shots=[1, 5])
    episodes, listeners = result.to_frame(), result.listener_frame()
    assert list(episodes.columns) == ["method", "task", *(f.name for f in dataclasses.fields(EpisodeRecord))]
    assert list(listeners.columns) == ["method", "task", *(f.name for f in dataclasses.fields(ListenerRecord))]
    assert len(episodes) == len(result.episodes) == 6 * 2 * 2 * 3  # listeners × scenarios × K × episodes
    assert len(listeners) == len(result.listeners) == 6 * 2 * 2
    assert set(episodes["method"]) == {"label-support"} and set(episodes["task"]) == {"toy"}
    # the per-listener frame is the mean of the episode frame over each listener's episodes
    means = episodes.groupby(["listener", "scenario", "shots"])["macro_f1"].mean()
    for row in listeners.itertuples():
        assert row.macro_f1 == pytest.approx(means[(row.listener, row.scenario, row.shots)])
        assert row.n_episodes == 3


def test_compare_returns_the_report_tables(toy_task_file, tmp_path, monkeypatch):
    results = [_run(m, toy_task_file) for m in ("label-prior", "label-support", ShrunkRates)]
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    comparison = perserbench.compare(results)
    assert comparison.written == [] and not any(Path.cwd().iterdir())  # nothing written without out=
    summary = comparison.summary
    assert sorted(summary["method"]) == ["ShrunkRates", "label-prior", "label-support"]
    assert set(zip(summary["task"], summary["scenario"], summary["shots"])) == {("toy", "unseen", 5)}
    for result in results:  # one seed: the report's mean and CI are the result file's
        row = summary[summary["method"] == result.method_name].iloc[0]
        (headline,) = [s for s in result.summary if s.metric == "macro_f1"]
        assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(
            (headline.mean, headline.ci_low, headline.ci_high))
        assert row["n_listeners"] == 6
    assert summary["best"].sum() == 1
    assert len(comparison.pairs) == 3 and {"p_value", "p_holm", "mean_diff"} <= set(comparison.pairs.columns)
    assert (comparison.pairs["p_holm"] >= comparison.pairs["p_value"]).all()
    cell = comparison.ranks[comparison.ranks["scope"] == "cell"]  # 3 methods, 6 listeners: Friedman ran
    assert sorted(cell["method"]) == sorted(summary["method"])
    assert cell["avg_rank"].sum() == pytest.approx(1 + 2 + 3)


def test_compare_writes_the_report_and_reads_result_files(toy_task_file, tmp_path):
    from perserbench.runner import write_result

    a = _run("label-prior", toy_task_file)
    b_path = write_result(_run("label-support", toy_task_file), tmp_path / "runs")
    comparison = perserbench.compare([a, tmp_path / "runs"], out=tmp_path / "report")
    assert {p.name for p in comparison.written} >= {"report.md", "report.html", "report.json"}
    assert all(p.exists() for p in comparison.written)
    assert sorted(comparison.summary["method"]) == ["label-prior", "label-support"]
    assert str(b_path) in comparison.analysis.data.files
    with pytest.raises(PerserbenchError, match="unknown metric"):
        perserbench.compare([a], metric="accuracy")


def test_cli_run_is_evaluate(cli, toy_task_file, tmp_path):
    """One code path: the file the command line writes holds evaluate's numbers."""
    code, _, err = cli("run", "--method", "label-support", "--task", toy_task_file, "--shots", "5",
                       "--scenario", "unseen", "--out", tmp_path)
    assert code == 0, err
    (path,) = tmp_path.glob("*.json")
    written = load_result(path)
    direct = _run("label-support", toy_task_file)
    assert written.episodes == direct.episodes and written.summary == direct.summary
    assert written.method == direct.method and written.task == direct.task
