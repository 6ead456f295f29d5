"""The leaderboard: only valid, plausible result files get on it, references and controls are
shown beside the ranking and never in it, and the board is a deterministic function of them.

Boards here are built in temporary folders from results generated on the tiny ``toy`` task of
conftest.py, and (for the ceiling) on a small synthetic task with the real ``oracle``; the
committed board is checked once, by the test CI relies on, at the end.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TOY_TASK, synthetic_task_toml
from scipy import stats as sps

from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.leaderboard import TaskResolver, build, check_board, load_board, validate_result
from perserbench.method import EmptyConfig, Method, config_hash
from perserbench.metrics import listener_aggregates, summarize
from perserbench.registry import register_method
from perserbench.results import RunResult, load_result, save_result
from perserbench.runner import result_filename, run
from perserbench.tasks import load_task, tasks_dir

REPO = Path(__file__).resolve().parent.parent
RANKED = ("consensus", "label-prior", "label-support", "lb-truth")
REFERENCES = ("oracle", "personal")
CELLS = [("seen", 1), ("seen", 5), ("unseen", 1), ("unseen", 5)]


def _toy_rule(x: torch.Tensor, flip: bool) -> torch.Tensor:
    """The toy corpus's labelling rule (conftest.load_toy) for a listener who flips or not."""
    signs = x[:, 0, :3]
    y = (signs > 0) ^ flip
    empty = ~y.any(dim=1)
    y[empty, signs[empty].argmax(dim=1)] = True
    return y.float()


class _ToyRule:
    def __init__(self, flip: bool) -> None:
        self.flip = flip

    def predict_proba(self, items: Items) -> torch.Tensor:
        return _toy_rule(items.x, self.flip)


@register_method("lb-truth")
class ToyTruth(Method):
    """An honest, perfect method on the toy corpus: it knows the labelling rule and infers
    from the support labels alone whether this listener flips it (one support item decides:
    the two rules never give the same label set)."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        pass

    def adapt(self, support: LabelledItems) -> _ToyRule:
        agrees = (_toy_rule(support.x, False) == support.y).all(dim=1).float().mean()
        return _ToyRule(bool(agrees < 0.5))


FAST = {"epochs": "2"}


def _save(result: RunResult, folder: Path) -> Path:
    return save_result(result, folder / result_filename(result))


def _rederive(result: RunResult, episodes: list) -> RunResult:
    """``result`` with other episode records and the aggregates recomputed from them, so only
    the checks beyond recomputation can tell."""
    return dataclasses.replace(result, episodes=episodes, listeners=listener_aggregates(episodes),
                               summary=summarize(episodes))


def _as_reference(result: RunResult, name: str) -> RunResult:
    """``result``'s numbers filed as the reference ``name`` (references are never audited)."""
    return dataclasses.replace(
        result, method={"name": name, "config": {}, "config_hash": config_hash(name, EmptyConfig()), "reference": True},
        audit={"ran": False, "passed": False, "episodes": 0, "max_abs_diff": 0.0, "tolerance": 1e-4})


def _as_control(result: RunResult, of: RunResult) -> RunResult:
    """``result``'s numbers filed as the other-listener control of ``of``'s method."""
    return dataclasses.replace(result, method={**of.method, "control": "other-listener"})


@pytest.fixture(scope="session")
def toy_inputs(tmp_path_factory) -> dict[str, Path]:
    """Task folder with toy.toml, and one result file per method on it (generated once).

    Toy labels are a deterministic function of the features and the listener's parity, so the
    toy task's true ceiling is the perfect rule: the ``oracle`` file is ``lb-truth``'s result
    filed as the oracle reference (the real oracle needs a synthetic corpus's generative model;
    the ceiling tests below use it). ``personal`` (the many-shot reference) carries
    label-support's numbers, and the other-listener control of label-support label-prior's.
    """
    root = tmp_path_factory.mktemp("leaderboard-inputs")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "toy.toml").write_text(TOY_TASK)
    task = load_task(tasks / "toy.toml")
    runs = root / "runs"
    results = {m: run(m, task, [1, 5], config_overrides=FAST if m == "consensus" else None) for m in RANKED}
    files = {m: _save(r, runs) for m, r in results.items()}
    files["oracle"] = _save(_as_reference(results["lb-truth"], "oracle"), runs)
    files["personal"] = _save(_as_reference(results["label-support"], "personal"), runs)
    files["control"] = _save(_as_control(results["label-prior"], results["label-support"]), runs)
    other = run("consensus", task, [5], scenarios=["unseen"], config_overrides={"epochs": "3"})
    files["consensus-other-config"] = _save(other, root / "other")
    return {"tasks": tasks, **files}


def _board(tmp_path: Path, toy_inputs: dict[str, Path], methods=RANKED + ("oracle",)) -> Path:
    board = tmp_path / "board"
    (board / "results").mkdir(parents=True)
    for m in methods:
        shutil.copy(toy_inputs[m], board / "results" / toy_inputs[m].name)
    return board


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _tables(markdown: str) -> list[list[list[str]]]:
    """The Markdown tables of a page: rows of cells, header first, separator dropped."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|") and set(line) <= set("|-: "):
            continue
        if line.startswith("| "):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def _table(markdown: str, first: str, last: str | None = None) -> list[list[str]]:
    """The one table of the page whose header starts with ``first`` (and ends with ``last``)."""
    found = [t for t in _tables(markdown) if t[0][0] == first and (last is None or t[0][-1] == last)]
    assert len(found) == 1, [t[0] for t in _tables(markdown)]
    return found[0]


def _summary(path: Path) -> dict[tuple[str, int], object]:
    return {(r.scenario, r.shots): r for r in load_result(path).summary if r.metric == "macro_f1"}


# ------------------------------------------------------------------- validation and submission


def test_generated_results_validate_and_submit_copies_them_byte_for_byte(tmp_path, toy_inputs, cli):
    board = tmp_path / "board"
    sources = [toy_inputs[m] for m in ("consensus", "label-prior", "oracle", "control")]
    code, _, err = cli("leaderboard", "submit", *sources, "--board", board, "--tasks", toy_inputs["tasks"])
    assert code == 0, err
    placed = sorted((board / "results").iterdir())
    assert [p.name for p in placed] == sorted(result_filename(load_result(s)) for s in sources)
    for source in sources:
        assert (board / "results" / source.name).read_bytes() == source.read_bytes()
    # resubmitting the same file is a no-op; it is refused only when the content differs
    assert cli("leaderboard", "submit", sources[0], "--board", board, "--tasks", toy_inputs["tasks"])[0] == 0


def _tamper_episode_metric(data):
    data["episodes"][3]["macro_f1"] = 0.0 if data["episodes"][3]["macro_f1"] > 0.5 else 1.0


def _tamper_top1(data):
    data["episodes"][3]["top1"] = 0.0 if data["episodes"][3]["top1"] > 0.5 else 1.0


def _tamper_counts(data):
    rec = data["episodes"][3]
    j = min(range(len(rec["fp"])), key=lambda c: rec["tp"][c] + rec["fp"][c])  # room for one more prediction
    rec["fp"][j] += 1


def _counts_of_another_class_count(data):
    data["episodes"][3]["tp"].append(0)


def _old_schema(data):
    data["schema_version"] = 2


def _tamper_summary_mean(data):
    row = next(r for r in data["summary"] if r["metric"] == "macro_f1")
    row["mean"] += 0.01


def _tamper_listener_record(data):
    data["listeners"][0]["top1"] = 0.25 if data["listeners"][0]["top1"] != 0.25 else 0.5


def _tamper_ci(data):
    data["summary"][0]["ci_high"] += 1e-6


def _tamper_task_hash(data):
    data["task"]["hash"] = "0" * 16


def _drop_listener(data):
    """Remove every episode of one listener and re-derive the aggregates, so only the
    completeness check can catch it."""
    result = RunResult.from_dict(data)
    victim = result.episodes[0].listener
    derived = _rederive(result, [e for e in result.episodes if e.listener != victim])
    data.update(json.loads(derived.to_json()))
    data["_victim"] = victim


def _duplicate_episode(data):
    data["episodes"].append(dict(data["episodes"][0]))


def _foreign_episode(data):
    extra = dict(data["episodes"][0])
    extra["episode"] = 99
    data["episodes"].append(extra)


def _wrong_support_size(data):
    data["episodes"][0]["n_support"] += 1


def _config_without_hash(data):
    data["method"]["config"]["epochs"] = 300


def _metric_out_of_range(data):
    data["episodes"][0]["micro_f1"] = 1.5


def _schema_version(data):
    data["schema_version"] = 0


def _audit_not_run(data):
    data["audit"] = {"ran": False, "passed": False, "episodes": 0, "max_abs_diff": 0.0, "tolerance": 1e-4}


def _audit_failed(data):
    data["audit"]["passed"] = False


def _audit_missing(data):
    data["audit"] = {}


def _claims_to_be_a_reference(data):
    data["method"]["reference"] = True


def _unknown_control(data):
    data["method"]["control"] = "others"


@pytest.mark.parametrize("tamper,reason", [
    (_tamper_episode_metric, "but its per-class counts give"),
    (_tamper_top1, "listener records do not recompute from the episode metrics"),
    (_tamper_counts, "but its per-class counts give"),
    (_counts_of_another_class_count, "has per-class counts of lengths [4, 3, 3]"),
    (_old_schema, "schema_version 2 predates the per-class counts"),
    (_tamper_listener_record, "listener records do not recompute"),
    (_tamper_summary_mean, "summary records do not recompute"),
    (_tamper_ci, "summary records do not recompute"),
    (_tamper_task_hash, "task hash 0000000000000000 does not match task 'toy'"),
    (_drop_listener, "required episode record(s) are missing (listener(s) {victim})"),
    (_duplicate_episode, "appear more than once"),
    (_foreign_episode, "are not episodes of task 'toy'"),
    (_wrong_support_size, "the task prescribes"),
    (_config_without_hash, "is not the hash of its config"),
    (_metric_out_of_range, "micro_f1 = 1.5, not a number in [0, 1]"),
    (_schema_version, "schema_version 0 is not supported"),
    (_audit_not_run, "the independence audit did not run"),
    (_audit_failed, "the independence audit did not pass"),
    (_audit_missing, "the independence audit did not run"),
    (_claims_to_be_a_reference, "method.reference is true but 'consensus' is not a reference method"),
    (_unknown_control, "method.control is 'others'"),
])
def test_tampered_result_is_refused_with_file_and_reason(tmp_path, toy_inputs, cli, tamper, reason):
    data = json.loads(toy_inputs["consensus"].read_text())
    tamper(data)
    victim = data.pop("_victim", None)
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(data))
    board = tmp_path / "board"
    code, _, err = cli("leaderboard", "submit", toy_inputs["label-prior"], bad, "--board", board,
                       "--tasks", toy_inputs["tasks"])
    assert code == 2
    line = _one_line_error(err)
    assert str(bad) in line and reason.format(victim=victim) in line, line
    assert not board.exists(), "a refused batch must not change the board"


def test_an_oracle_result_filed_as_a_ranked_method_is_refused(tmp_path, toy_inputs):
    data = json.loads(toy_inputs["oracle"].read_text())
    data["method"]["reference"] = False
    data["audit"] = json.loads(toy_inputs["lb-truth"].read_text())["audit"]  # even with a passed audit
    path = tmp_path / "oracle.json"
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match="method.reference is false but 'oracle' is a reference method"):
        validate_result(path, TaskResolver(toy_inputs["tasks"]))


def test_result_of_a_changed_task_spec_is_refused(tmp_path, toy_inputs):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "toy.toml").write_text(TOY_TASK.replace("episodes = 3", "episodes = 4"))
    with pytest.raises(Exception, match="does not match task 'toy' resolved now .*same task version"):
        validate_result(toy_inputs["consensus"], TaskResolver(tasks))
    (tasks / "toy.toml").unlink()
    with pytest.raises(Exception, match="task 'toy' has no spec"):
        validate_result(toy_inputs["consensus"], TaskResolver(tasks))


def test_two_files_for_the_same_method_and_cell_are_refused(tmp_path, toy_inputs, cli):
    board = _board(tmp_path, toy_inputs, methods=("consensus",))
    other = toy_inputs["consensus-other-config"]
    code, _, err = cli("leaderboard", "submit", other, "--board", board, "--tasks", toy_inputs["tasks"])
    assert code == 2 and "consensus on toy unseen K=5 is already on the board" in _one_line_error(err)
    shutil.copy(other, board / "results" / other.name)  # bypassing submit does not help
    code, _, err = cli("leaderboard", "build", "--board", board, "--tasks", toy_inputs["tasks"])
    assert code == 2 and "is already on the board from" in _one_line_error(err)


def test_two_files_of_one_canonical_name_in_one_batch_are_refused(tmp_path, toy_inputs, cli):
    twin = load_result(toy_inputs["consensus"])
    twin.wall_time_s += 1.0  # same run, same canonical name, other bytes
    path = save_result(twin, tmp_path / "twin.json")
    board = tmp_path / "board"
    code, _, err = cli("leaderboard", "submit", toy_inputs["consensus"], path, "--board", board,
                       "--tasks", toy_inputs["tasks"])
    assert code == 2 and "in the same batch has the same canonical name" in _one_line_error(err)
    assert not board.exists()


def test_board_files_must_have_canonical_names(tmp_path, toy_inputs):
    board = _board(tmp_path, toy_inputs, methods=("consensus",))
    (board / "results" / toy_inputs["consensus"].name).rename(board / "results" / "best-method.json")
    with pytest.raises(Exception, match="best-method.json: result files on the board must use their canonical name"):
        build(board, TaskResolver(toy_inputs["tasks"]))


# ------------------------------------------------------------------- the ceiling


SMALL_SYNTHETIC = synthetic_task_toml(shots=(1, 5))


@pytest.fixture(scope="module")
def synthetic_inputs(tmp_path_factory) -> dict[str, Path]:
    """The real oracle and an honest method on a small synthetic task, and a hand-made result
    of that method that scores 1.0 everywhere in K=5 (what a memory of other episodes' labels
    would give)."""
    root = tmp_path_factory.mktemp("ceiling-inputs")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "synthetic-small.toml").write_text(SMALL_SYNTHETIC)
    task = load_task(tasks / "synthetic-small.toml")
    oracle, honest = run("oracle", task, [1, 5]), run("label-support", task, [1, 5])
    perfect = [dataclasses.replace(e, macro_f1=1.0, micro_f1=1.0, tp=[t + f for t, f in zip(e.tp, e.fn)],
                                   fp=[0] * len(e.fp), fn=[0] * len(e.fn)) if e.shots == 5 else e
               for e in honest.episodes]
    return {"tasks": tasks, "oracle": _save(oracle, root / "runs"), "honest": _save(honest, root / "runs"),
            "too-good": _save(_rederive(honest, perfect), root / "too-good")}


def test_a_result_above_the_ceiling_is_refused_by_submit_and_build(tmp_path, synthetic_inputs, cli):
    files, board = synthetic_inputs, tmp_path / "board"
    args = ("--board", board, "--tasks", files["tasks"])
    bound = _summary(files["oracle"])[("unseen", 5)].ci_high
    assert bound < 0.95  # the true listener model is far from perfect on synthetic listeners
    code, _, err = cli("leaderboard", "submit", files["oracle"], files["too-good"], *args)
    line = _one_line_error(err)
    assert code == 2 and str(files["too-good"]) in line, line
    assert f"macro_f1 1.0000 on synthetic-small unseen K=5 is above the ceiling's upper 95% bound {bound:.4f}" in line
    assert not board.exists()
    # the ceiling already on the board counts too, and so does a bypassed submission
    assert cli("leaderboard", "submit", files["oracle"], files["honest"], *args)[0] == 0
    code, _, err = cli("leaderboard", "submit", files["too-good"], "--replace", *args)
    assert code == 2 and "above the ceiling" in _one_line_error(err)
    shutil.copy(files["too-good"], board / "results" / files["honest"].name)
    code, _, err = cli("leaderboard", "build", *args)
    assert code == 2 and "above the ceiling" in _one_line_error(err)


def test_the_real_oracle_is_shown_as_the_ceiling_and_not_ranked(tmp_path, synthetic_inputs, cli):
    board = tmp_path / "board"
    args = ("--board", board, "--tasks", synthetic_inputs["tasks"])
    assert cli("leaderboard", "submit", synthetic_inputs["oracle"], synthetic_inputs["honest"], *args)[0] == 0
    assert cli("leaderboard", "build", *args)[0] == 0
    readme = (board / "README.md").read_text()
    ranked, references = _table(readme, "Rank"), _table(readme, "Reference")
    assert [row[:2] for row in ranked[1:]] == [["1", "label-support"]]
    assert [row[0] for row in references[1:]] == ["oracle"]
    oracle = _summary(synthetic_inputs["oracle"])
    assert references[1][1:3] == [f"{oracle[c].mean:.3f} [{oracle[c].ci_low:.3f}, {oracle[c].ci_high:.3f}]"
                                  for c in [("unseen", 1), ("unseen", 5)]]


# ------------------------------------------------------------------- references, headroom and controls


def test_references_and_controls_are_shown_but_never_ranked_or_tested(tmp_path, toy_inputs):
    board_dir = _board(tmp_path, toy_inputs, RANKED + REFERENCES + ("control",))
    task = load_board(board_dir, TaskResolver(toy_inputs["tasks"])).tasks["toy"]
    assert task.methods() == sorted(RANKED)
    assert task.methods("reference") == ["oracle", "personal"] and task.ceilings == ["oracle", "personal"]
    assert task.methods("control") == ["label-support"]
    assert [m for _, m, _ in task.overall()] == sorted(RANKED, key=lambda m: -np.mean(
        [_summary(toy_inputs[m])[c].mean for c in CELLS]))
    for key in CELLS:
        assert set(task.comparisons[key]) == set(RANKED) - {"consensus"}
        assert {c.method for _, c in task.cell_ranking(key)} == set(RANKED)
    readme = build(board_dir, TaskResolver(toy_inputs["tasks"]))["README.md"]
    ranked, references = _table(readme, "Rank"), _table(readme, "Reference")
    headroom = next(t for t in _tables(readme) if t[0][:2] == ["Method", "Ceiling"])
    gains = _table(readme, "Method", "Control result")
    assert [row[1] for row in ranked[1:]] == [m for _, m, _ in task.overall()]
    assert {row[0] for row in headroom[1:]} == set(RANKED) - {"consensus"}
    assert [row[0] for row in references[1:]] == ["oracle", "personal"]
    assert [row[0] for row in gains[1:]] == ["label-support"]


def test_headroom_captured_is_computed_from_the_cell_means(tmp_path, toy_inputs):
    board_dir = _board(tmp_path, toy_inputs, RANKED + REFERENCES)
    task = load_board(board_dir, TaskResolver(toy_inputs["tasks"])).tasks["toy"]
    means = {m: _summary(toy_inputs[m]) for m in RANKED + REFERENCES}
    for key in CELLS:
        base = means["consensus"][key].mean
        for method in set(RANKED) - {"consensus"}:
            for ceiling in REFERENCES:
                gap = means[ceiling][key].mean - base
                value = task.headroom[key][method][ceiling]
                if gap > 0:
                    assert value == pytest.approx((means[method][key].mean - base) / gap, abs=1e-12)
                else:  # a "ceiling" below consensus leaves nothing to capture
                    assert value is None
        assert "consensus" not in task.headroom[key]
    # lb-truth is perfect and the toy oracle is that perfect rule: it captures all the headroom
    assert all(task.headroom[key]["lb-truth"]["oracle"] == pytest.approx(1.0) for key in CELLS)
    readme = build(board_dir, TaskResolver(toy_inputs["tasks"]))["README.md"]
    headroom = next(t for t in _tables(readme) if t[0][:2] == ["Method", "Ceiling"])
    assert headroom[0] == ["Method", "Ceiling"] + [f"{s} K={k}" for s, k in CELLS]
    for ceiling in REFERENCES:
        row = next(r for r in headroom if r[:2] == ["label-prior", ceiling])
        values = [task.headroom[key]["label-prior"][ceiling] for key in CELLS]
        assert row[2:] == ["—" if v is None else f"{100 * v:.0f}%" for v in values]


def test_personalization_gain_is_own_minus_control_paired_over_listeners(tmp_path, toy_inputs):
    board_dir = _board(tmp_path, toy_inputs, RANKED + ("control",))
    task = load_board(board_dir, TaskResolver(toy_inputs["tasks"])).tasks["toy"]
    own, control = load_result(toy_inputs["label-support"]), load_result(toy_inputs["control"])
    def per_listener(r: RunResult, key: tuple[str, int]) -> np.ndarray:
        rows = sorted((x for x in r.listeners if (x.scenario, x.shots) == key), key=lambda x: x.listener)
        return np.array([x.macro_f1 for x in rows])

    for key in CELLS:
        a, b = per_listener(own, key), per_listener(control, key)
        gain = task.gains[key]["label-support"]
        assert gain.delta == pytest.approx(np.mean(a - b)) and gain.n_listeners == 6
        assert gain.p_value == pytest.approx(1.0 if np.allclose(a, b) else sps.wilcoxon(a, b).pvalue)
        assert gain.p_adjusted == gain.p_value  # one method with a control: a family of one
    readme = build(board_dir, TaskResolver(toy_inputs["tasks"]))["README.md"]
    ranked, gains = _table(readme, "Rank"), _table(readme, "Method", "Control result")
    assert [row[1] for row in ranked[1:]].count("label-support") == 1  # the control is not a second entry
    assert gains[1][1:5] == [f"{task.gains[k]['label-support'].delta:+.3f} {task.gains[k]['label-support'].marker}"
                             .strip() for k in CELLS]
    assert toy_inputs["control"].name in gains[1][5]


def test_two_controls_of_one_method_and_cell_are_refused(tmp_path, toy_inputs, cli):
    board = _board(tmp_path, toy_inputs, ("label-support", "control"))
    twin = load_result(toy_inputs["control"])
    twin.method["config"] = {"note": 1}
    twin.method["config_hash"] = config_hash(twin.method_name, dataclasses.make_dataclass("C", ["note"])(1))
    path = _save(twin, tmp_path / "twin")
    code, _, err = cli("leaderboard", "submit", path, "--board", board, "--tasks", toy_inputs["tasks"])
    assert code == 2, err
    assert "label-support (other-listener control) on toy seen K=1 is already on the board" in _one_line_error(err)


# ------------------------------------------------------------------- where the board and the tasks are


def test_board_and_tasks_defaults_do_not_assume_a_checkout(tmp_path, toy_inputs, cli, monkeypatch):
    monkeypatch.delenv("PERSERBENCH_LEADERBOARD", raising=False)
    monkeypatch.delenv("PERSERBENCH_TASKS", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli("leaderboard", "build", "--tasks", toy_inputs["tasks"])
    assert code == 2 and f"{elsewhere / 'leaderboard'}: no leaderboard folder" in _one_line_error(err)
    assert not (elsewhere / "leaderboard").exists()
    # ./leaderboard of the current directory is the default board ...
    _board(elsewhere, toy_inputs, ("consensus",)).rename(elsewhere / "leaderboard")
    assert cli("leaderboard", "build", "--tasks", toy_inputs["tasks"])[0] == 0
    assert (elsewhere / "leaderboard" / "README.md").is_file()
    # ... unless $PERSERBENCH_LEADERBOARD names another
    other = _board(tmp_path / "env", toy_inputs, ("label-prior",))
    monkeypatch.setenv("PERSERBENCH_LEADERBOARD", str(other))
    assert cli("leaderboard", "build", "--tasks", toy_inputs["tasks"])[0] == 0
    assert "label-prior" in (other / "README.md").read_text()
    # task specs come from the installed package, not from a tasks/ folder that happens to be here
    shutil.copytree(toy_inputs["tasks"], elsewhere / "tasks")
    code, _, err = cli("leaderboard", "validate", toy_inputs["consensus"])
    line = _one_line_error(err)
    assert code == 2 and f"task 'toy' has no spec {tasks_dir() / 'toy.toml'}" in line and str(elsewhere) not in line


# ------------------------------------------------------------------- building and checking


def test_build_check_fails_on_hand_edited_board_and_passes_after_rebuild(tmp_path, toy_inputs, cli):
    board = _board(tmp_path, toy_inputs)
    args = ("--board", board, "--tasks", toy_inputs["tasks"])
    code, _, err = cli("leaderboard", "build", "--check", *args)
    assert code == 2 and "README.md, index.html differ from a rebuild" in _one_line_error(err)
    assert cli("leaderboard", "build", *args)[0] == 0
    assert cli("leaderboard", "build", "--check", *args)[0] == 0

    readme = board / "README.md"
    original = readme.read_text()
    readme.write_text(original.replace("label-prior", "label-prior-improved", 1))
    code, _, err = cli("leaderboard", "build", "--check", *args)
    assert code == 2 and "README.md differs from a rebuild" in _one_line_error(err)
    assert cli("leaderboard", "build", *args)[0] == 0
    assert readme.read_text() == original
    assert cli("leaderboard", "build", "--check", *args)[0] == 0

    # an invalid result file fails the check even when the board files are current
    path = board / "results" / toy_inputs["label-support"].name
    data = json.loads(path.read_text())
    data["episodes"][0]["macro_f1"] = 0.0 if data["episodes"][0]["macro_f1"] else 1.0
    path.write_text(json.dumps(data))
    code, _, err = cli("leaderboard", "build", "--check", *args)
    assert code == 2 and path.name in _one_line_error(err)


def test_rebuild_is_byte_identical(tmp_path, toy_inputs):
    board = _board(tmp_path, toy_inputs, RANKED + REFERENCES + ("control",))
    first = build(board, TaskResolver(toy_inputs["tasks"]))
    second = build(board, TaskResolver(toy_inputs["tasks"]))  # fresh resolver: nothing cached
    assert first == second
    assert set(first) == {"README.md", "index.html"}


def test_readme_numbers_and_ranks_come_from_the_result_files(tmp_path, toy_inputs):
    board = _board(tmp_path, toy_inputs)
    readme = build(board, TaskResolver(toy_inputs["tasks"]))["README.md"]
    ranked, references = _table(readme, "Rank"), _table(readme, "Reference")
    assert ranked[0] == ["Rank", "Method"] + [f"{s} K={k}" for s, k in CELLS] + ["Result", "perserbench"]
    rows = {row[1]: row for row in ranked[1:]}
    rows.update({row[0]: [""] + row for row in references[1:]})
    assert set(rows) == set(RANKED) | {"oracle"}
    overall = {}
    for method, cols in rows.items():
        result = load_result(toy_inputs[method])
        head = _summary(toy_inputs[method])
        for i, key in enumerate(CELLS):
            r = head[key]
            assert cols[2 + i].startswith(f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"), (method, key, cols)
        assert f"results/{toy_inputs[method].name}" in cols[2 + len(CELLS)]
        assert cols[-1] == result.perserbench_version
        overall[method] = np.mean([head[k].mean for k in CELLS])
    assert [row[1] for row in ranked[1:]] == sorted(RANKED, key=lambda m: -overall[m])
    assert [row[0] for row in ranked[1:]] == [str(i + 1) for i in range(len(RANKED))]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.images: list[str] = []
        self.selects: dict[str, list[str]] = {}
        self._select: str | None = None
        self.links: list[str] = []
        self.external: list[str] = []
        self.headings: list[str] = []
        self._h4 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "select":
            self._select = a["id"]
            self.selects[self._select] = []
        elif tag == "option" and self._select:
            self.selects[self._select].append(a["value"])
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "h4":
            self._h4 = True
            self.headings.append("")
        if tag in {"script", "link", "img"} and (a.get("src") or a.get("href") or "").startswith(("http", "//")):
            self.external.append(tag)

    def handle_data(self, data):
        if self._h4:
            self.headings[-1] += data

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "h4":
            self._h4 = False


def test_html_is_self_contained_with_tables_selectors_and_png_figures(tmp_path, toy_inputs):
    board = _board(tmp_path, toy_inputs, RANKED + REFERENCES + ("control",))
    page = _Page()
    page.feed(build(board, TaskResolver(toy_inputs["tasks"]))["index.html"])
    # per (scenario, K) of the toy task: ranked methods, ceiling / references, personalization gain,
    # do no harm; then the task's do-no-harm verdicts over all cells
    assert page.tables == 4 * len(CELLS) + 1
    assert [h.split(" (")[0] for h in page.headings] == (
        ["Ceiling / references", "Personalization gain", "Do no harm, this cell"] * len(CELLS)
        + ["Do no harm, all cells of toy"])
    assert page.selects == {"task": ["toy"], "scenario": ["seen", "unseen"], "shots": ["1", "5"]}
    assert not page.external
    # 4 critical-difference diagrams (4 ranked methods) + 2 score-vs-shots plots
    assert len(page.images) == 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for link in page.links:
        assert (board / link).is_file(), link


def test_empty_board_builds(tmp_path, toy_inputs):
    files = build(tmp_path / "empty", TaskResolver(toy_inputs["tasks"]))
    assert "No results yet" in files["README.md"] and "No results yet" in files["index.html"]


def test_html_renders_in_headless_chromium(tmp_path, toy_inputs):
    import browser
    from PIL import Image

    board = _board(tmp_path, toy_inputs, RANKED + REFERENCES + ("control",))
    for name, text in build(board, TaskResolver(toy_inputs["tasks"])).items():
        (board / name).write_text(text)
    check = browser.check_page(board / "index.html")
    assert check.errors == [] and check.broken_images == []
    shot = browser.screenshot(board / "index.html", tmp_path / "board.png")
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.std() > 10, "screenshot is blank"


@pytest.mark.slow
def test_committed_leaderboard_is_valid_and_current():
    """The committed board must rebuild byte-identically from its result files, every result
    valid under the current rules (schema, audit, ceiling); and the synthetic task must carry
    its oracle ceiling, or the ceiling check would guard nothing.

    Slow (about 50 s: it re-derives every bootstrap CI of 60 files and renders every figure),
    and CI already runs the same check right after the suite (``perserbench leaderboard build
    --check`` in .ci/run), so the suite does not pay it twice; ``-m slow`` runs it here."""
    board = REPO / "leaderboard"
    check_board(board, TaskResolver(tasks_dir()))  # validates and renders every file once
    oracle = sorted((board / "results").glob("oracle__synthetic__*.json"))
    assert oracle and all(load_result(path).is_reference for path in oracle)  # filed as a reference, never ranked


# ------------------------------------------------------------------- do no harm and across tasks


def _harmful(result: RunResult, name: str) -> RunResult:
    """``result``'s predictions with one false positive more on every class of every episode
    that has room for one (macro- and micro-F1 recomputed from the counts, as validation
    requires), filed as ``name``."""
    from perserbench.metrics import f1_from_counts

    episodes = []
    for r in result.episodes:
        fp = [f + (t + f < r.n_query) for t, f in zip(r.tp, r.fp)]
        macro, micro = f1_from_counts(r.tp, fp, r.fn)
        episodes.append(dataclasses.replace(r, fp=fp, macro_f1=macro, micro_f1=micro))
    named = dataclasses.replace(result, method={**result.method, "name": name, "config": {},
                                                "config_hash": config_hash(name, EmptyConfig())})
    return _rederive(named, episodes)


def test_do_no_harm_verdicts_are_on_the_board(tmp_path, toy_inputs):
    from perserbench.leaderboard.markdown import render_markdown
    from perserbench.stats import no_harm_test

    board_dir = _board(tmp_path, toy_inputs, ("consensus", "label-prior"))
    consensus = load_result(toy_inputs["consensus"])
    _save(_harmful(consensus, "lb-harm"), board_dir / "results")
    copy = _harmful(consensus, "lb-copy")
    _save(_rederive(copy, [dataclasses.replace(r, fp=o.fp, macro_f1=o.macro_f1, micro_f1=o.micro_f1)
                           for r, o in zip(copy.episodes, consensus.episodes)]), board_dir / "results")
    board = load_board(board_dir, TaskResolver(toy_inputs["tasks"]))
    task = board.tasks["toy"]
    for key in CELLS:
        assert task.no_harm[key]["lb-harm"].verdict == "harmful"
        assert task.no_harm[key]["lb-copy"].verdict == "no harm" and task.no_harm[key]["lb-copy"].mean == 0.0
        cells = task.ranked[key]
        expected = no_harm_test([{x: cells["label-prior"].per_listener[x] - cells["consensus"].per_listener[x]
                                  for x in cells["consensus"].per_listener}])
        assert task.no_harm[key]["label-prior"] == expected
    assert task.no_harm_task["lb-harm"].verdict == "harmful" and task.no_harm_task["lb-copy"].verdict == "no harm"
    assert "consensus" not in task.no_harm_task
    readme = build(board_dir, TaskResolver(toy_inputs["tasks"]))["README.md"]
    table = _table(readme, "Method", "90% CI (all cells)")
    rows = {row[0]: row for row in table[1:]}
    assert set(rows) == {"label-prior", "lb-copy", "lb-harm"}
    assert all(v.startswith("harmful (") for v in rows["lb-harm"][1:1 + len(CELLS)])
    assert rows["lb-copy"][-2] == "**no harm (+0.000)**"
    assert "Do no harm on the uniform controls" not in readme  # toy is not a uniform control
    task.uniform = True
    uniform = _table(render_markdown(board), "Method", "toy")
    assert {row[0]: row[1] for row in uniform[1:]}["lb-harm"].startswith("harmful (")
    html = build(board_dir, TaskResolver(toy_inputs["tasks"]))["index.html"]
    assert "Do no harm, this cell" in html and "Do no harm, all cells of toy" in html


def test_friedman_across_tasks_uses_the_non_uniform_tasks_as_blocks(tmp_path, toy_inputs):
    from perserbench.leaderboard.board import across_tasks

    task = load_board(_board(tmp_path, toy_inputs, RANKED), TaskResolver(toy_inputs["tasks"])).tasks["toy"]
    alone = across_tasks([task])
    assert alone.result is None and "at least 2 tasks" in alone.note
    twin = dataclasses.replace(task, name="toy-2")
    control = dataclasses.replace(task, name="toy-uniform", uniform=True)
    across = across_tasks([task, twin, control])
    assert across.blocks == ["toy", "toy-2"] and across.methods == sorted(RANKED)
    means = {m: mean for _, m, mean in task.overall()}
    assert across.scores == [[means[m] for m in sorted(RANKED)]] * 2
    assert across.result is not None and across.result.n_blocks == 2


# ----------------------------------------------------------------------------- reproduce


def test_reproduce_reruns_a_result_and_accepts_it_episode_for_episode(toy_inputs, cli):
    from perserbench.leaderboard.reproduce import reproduce

    done = reproduce(toy_inputs["consensus"], TaskResolver(toy_inputs["tasks"]))
    assert done.episodes == len(load_result(toy_inputs["consensus"]).episodes) > 0
    code, out, err = cli("leaderboard", "reproduce", toy_inputs["label-support"], "--tasks", toy_inputs["tasks"])
    assert code == 0 and "episode records identical" in " ".join(out.split()), err


def test_reproduce_refuses_an_edited_result_that_validates(toy_inputs, tmp_path, cli):
    """A forger who removes an episode's false positives and recomputes its F1s and the
    aggregates passes validation; the re-run does not agree."""
    from perserbench.metrics import f1_from_counts

    result = load_result(toy_inputs["label-prior"])
    records = list(result.episodes)
    i = next(i for i, r in enumerate(records) if sum(r.fp) > 0)
    fp = [0] * len(records[i].fp)
    macro, micro = f1_from_counts(records[i].tp, fp, records[i].fn)
    records[i] = dataclasses.replace(records[i], fp=fp, macro_f1=macro, micro_f1=micro)
    forged = dataclasses.replace(result, episodes=records, listeners=listener_aggregates(records),
                                 summary=summarize(records))
    path = save_result(forged, tmp_path / toy_inputs["label-prior"].name)
    validate_result(path, TaskResolver(toy_inputs["tasks"]))  # consistent with itself
    code, _, err = cli("leaderboard", "reproduce", path, "--tasks", toy_inputs["tasks"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    r = records[i]
    assert (f"not reproduced: episode {r.episode} of listener {r.listener!r} (fold {r.fold}, {r.scenario}, "
            f"K={r.shots}, seed {r.seed}): macro_f1 is {r.macro_f1!r} in the file") in lines[0]
    assert f"(1 of {len(records)} episode records differ)" in lines[0] and "elsewhere" not in lines[0]

    # The same file claiming another CPU: the error says so, as the likelier cause of a few records.
    assert result.environment["cpu"] and result.environment["cpu_capability"]
    elsewhere = dataclasses.replace(forged, environment={**forged.environment, "cpu": "Another CPU"})
    code, _, err = cli("leaderboard", "reproduce", save_result(elsewhere, path), "--tasks", toy_inputs["tasks"])
    assert code == 2 and f"cpu 'Another CPU' there, {result.environment['cpu']!r} here" in " ".join(err.split())


def _records(shift: dict[tuple[str, int], float] | None = None, noise: float = 0.0, seed: int = 0) -> list[dict]:
    """Stored episode records of 8 listeners x 2 cells x 5 episodes; ``shift`` adds to every
    macro_f1 of a cell, ``noise`` adds N(0, noise) to each record (another machine's floats)."""
    rng = np.random.default_rng(seed)
    out = []
    for scenario, shots in (("seen", 5), ("unseen", 5)):
        for listener in range(8):
            for episode in range(5):
                value = 0.5 + 0.03 * listener + (shift or {}).get((scenario, shots), 0.0) + rng.normal(0, noise)
                out.append({"fold": listener % 2, "listener": f"L{listener}", "scenario": scenario, "shots": shots,
                            "episode": episode, "seed": 0, "macro_f1": value})
    return out


def test_cell_agreement_accepts_float_noise_and_names_a_shifted_cell():
    from perserbench.leaderboard.reproduce import cell_agreement

    file = _records()
    same = cell_agreement(file, _records())
    assert [(c.scenario, c.shots) for c in same] == [("seen", 5), ("unseen", 5)]
    assert all(c.equivalent and c.test.mean == 0.0 for c in same)
    noisy = cell_agreement(file, _records(noise=0.01, seed=1))  # per-listener means move by ~0.0045
    assert all(c.equivalent for c in noisy), [c.describe() for c in noisy]
    shifted = cell_agreement(file, _records(shift={("unseen", 5): 0.05}, noise=0.01, seed=1))
    assert [c.equivalent for c in shifted] == [True, False]
    assert shifted[1].test.mean == pytest.approx(0.05, abs=0.01)
    assert shifted[1].describe().startswith("unseen K=5: per-listener mean macro_f1 differs by +0.04")


def test_reproduce_accepts_another_machines_file_within_tolerance_only(toy_inputs, tmp_path, cli, monkeypatch):
    """A file written on another CPU whose re-run here differs by float noise passes, saying how
    many records differ; one whose cell moved beyond the margin, or any difference on the
    file's own machine, or --exact, does not."""
    import perserbench.api

    path = toy_inputs["label-prior"]
    result = load_result(path)
    real_evaluate = perserbench.api.evaluate

    def rerun_with(delta: float, cell: tuple[str, int] | None = None):
        def evaluate(*args, **kwargs):
            again = real_evaluate(*args, **kwargs)
            # Another machine's floats: one record per listener of every cell moves a little (or, with
            # ``cell``, every record of that cell moves by ``delta``).
            seen: set = set()
            episodes = []
            for r in again.episodes:
                hit = (r.scenario, r.shots) == cell if cell else (r.scenario, r.shots, r.listener) not in seen
                seen.add((r.scenario, r.shots, r.listener))
                step = delta * (1 + len(seen) % 3)  # not all alike, as float noise is not
                episodes.append(dataclasses.replace(r, macro_f1=r.macro_f1 + step) if hit else r)
            return dataclasses.replace(again, episodes=episodes)
        monkeypatch.setattr(perserbench.api, "evaluate", evaluate)

    elsewhere = save_result(dataclasses.replace(result, environment={**result.environment, "cpu": "Another CPU"}),
                            tmp_path / path.name)
    rerun_with(0.001)
    code, out, err = cli("leaderboard", "reproduce", elsewhere, "--tasks", toy_inputs["tasks"])
    text = " ".join(out.split())
    cells = len({(r.scenario, r.shots) for r in result.episodes})
    listeners = {(r.scenario, r.shots, r.listener) for r in result.episodes}
    assert code == 0 and "reproduced within tolerance" in text, err
    assert f"{len(listeners)} of {len(result.episodes)} episode records differ" in text
    assert "cpu 'Another CPU' there" in text and f"every one of {cells} cells shown equivalent within ±0.01" in text

    code, _, err = cli("leaderboard", "reproduce", elsewhere, "--tasks", toy_inputs["tasks"], "--exact")
    assert code == 2 and "not reproduced" in err and "within tolerance" not in err
    code, _, err = cli("leaderboard", "reproduce", path, "--tasks", toy_inputs["tasks"])  # its own machine
    assert code == 2 and "not reproduced" in err and "elsewhere" not in err

    rerun_with(0.03, cell=("unseen", 5))
    code, _, err = cli("leaderboard", "reproduce", elsewhere, "--tasks", toy_inputs["tasks"])
    line = _one_line_error(" ".join(err.split()))
    assert code == 2 and "not within tolerance: 1 of" in line and "e.g. unseen K=5: per-listener mean" in line
    assert "cpu 'Another CPU' there" in line


def test_config_overrides_rebuild_the_recorded_config():
    from perserbench.leaderboard.reproduce import config_overrides
    from perserbench.method import config_dict
    from perserbench.registry import get_method, make_config

    for name in ("calibrate", "meta-perser", "finetune"):
        config = get_method(name).Config()
        assert make_config(name, config_overrides(config_dict(config))) == config
