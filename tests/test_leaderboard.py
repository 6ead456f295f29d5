"""The leaderboard: only valid result files get on it, and it is a deterministic function of them.

Boards here are built in temporary folders from results generated on the tiny ``toy`` task of
conftest.py (the committed board is checked once, by the test CI relies on, at the end).
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
from conftest import TOY_TASK

from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.leaderboard import (
    CEILING_METHODS,
    TaskResolver,
    build,
    check_board,
    validate_result,
)
from perserbench.method import EmptyConfig, Method, config_hash
from perserbench.registry import register_method
from perserbench.results import load_result
from perserbench.runner import result_filename, run, write_result
from perserbench.tasks import load_task

REPO = Path(__file__).resolve().parent.parent


class _ToyRule:
    """The toy corpus's generating rule (conftest.load_toy) for one listener."""

    def __init__(self, flip: bool) -> None:
        self.flip = flip

    def predict_proba(self, items: Items) -> torch.Tensor:
        signs = items.x[:, 0, :3]
        y = (signs > 0) ^ self.flip
        empty = ~y.any(dim=1)
        y[empty, signs[empty].argmax(dim=1)] = True
        return y.float()


@register_method("lb-truth")
class ToyTruth(Method):
    """Knows how toy listeners label; stands in for the synthetic ``oracle`` ceiling."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        pass

    def adapt(self, support: LabelledItems) -> _ToyRule:
        return _ToyRule(int(support.listener[1:]) % 2 == 1)


FAST = {"epochs": "2"}


@pytest.fixture(scope="session")
def toy_inputs(tmp_path_factory) -> dict[str, Path]:
    """Task folder with toy.toml, and one result file per method on it (generated once)."""
    root = tmp_path_factory.mktemp("leaderboard-inputs")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "toy.toml").write_text(TOY_TASK)
    task = load_task(tasks / "toy.toml")
    runs = root / "runs"
    files = {}
    for method, overrides in (("consensus", FAST), ("label-prior", None), ("label-support", None)):
        files[method] = write_result(run(method, task, [1, 5], config_overrides=overrides), runs)
    ceiling = run("lb-truth", task, [1, 5])
    ceiling.method = {"name": "oracle", "config": {}, "config_hash": config_hash("oracle", EmptyConfig())}
    files["oracle"] = write_result(ceiling, runs)
    other = run("consensus", task, [5], scenarios=["unseen"], config_overrides={"epochs": "3"})
    files["consensus-other-config"] = write_result(other, root / "other")
    return {"tasks": tasks, **files}


def _board(tmp_path: Path, toy_inputs: dict[str, Path], methods=("consensus", "label-prior", "label-support", "oracle")) -> Path:
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


# ------------------------------------------------------------------- validation and submission


def test_generated_results_validate_and_submit_copies_them_byte_for_byte(tmp_path, toy_inputs, cli):
    board = tmp_path / "board"
    sources = [toy_inputs[m] for m in ("consensus", "label-prior", "oracle")]
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
    from perserbench.metrics import listener_aggregates, summarize
    from perserbench.results import RunResult

    victim = data["episodes"][0]["listener"]
    data["episodes"] = [e for e in data["episodes"] if e["listener"] != victim]
    result = RunResult.from_dict(data)
    data["listeners"] = [dataclasses.asdict(r) for r in listener_aggregates(result.episodes)]
    data["summary"] = [dataclasses.asdict(r) for r in summarize(result.episodes)]
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


@pytest.mark.parametrize("tamper,reason", [
    (_tamper_episode_metric, "listener records do not recompute from the episode metrics"),
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


def test_board_files_must_have_canonical_names(tmp_path, toy_inputs):
    board = _board(tmp_path, toy_inputs, methods=("consensus",))
    (board / "results" / toy_inputs["consensus"].name).rename(board / "results" / "best-method.json")
    with pytest.raises(Exception, match="best-method.json: result files on the board must use their canonical name"):
        build(board, TaskResolver(toy_inputs["tasks"]))


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
    board = _board(tmp_path, toy_inputs)
    first = build(board, TaskResolver(toy_inputs["tasks"]))
    second = build(board, TaskResolver(toy_inputs["tasks"]))  # fresh resolver: nothing cached
    assert first == second
    assert set(first) == {"README.md", "index.html"}


def test_readme_numbers_and_ranks_come_from_the_result_files(tmp_path, toy_inputs):
    board = _board(tmp_path, toy_inputs)
    readme = build(board, TaskResolver(toy_inputs["tasks"]))["README.md"]
    rows = {}
    for line in readme.splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        if len(cols) > 3 and cols[1].split(" ")[0] in {"consensus", "label-prior", "label-support", "oracle"}:
            rows[cols[1].split(" ")[0]] = cols
    assert set(rows) == {"consensus", "label-prior", "label-support", "oracle"}
    cells = [("seen", 1), ("seen", 5), ("unseen", 1), ("unseen", 5)]
    overall = {}
    for method, cols in rows.items():
        result = load_result(toy_inputs[method])
        head = {(r.scenario, r.shots): r for r in result.summary if r.metric == "macro_f1"}
        for i, key in enumerate(cells):
            r = head[key]
            assert cols[2 + i].startswith(f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"), (method, key, cols)
        assert f"results/{toy_inputs[method].name}" in cols[2 + len(cells)]
        assert cols[-1] == result.perserbench_version
        overall[method] = np.mean([head[k].mean for k in cells])
    ranked = sorted((m for m in overall if m not in CEILING_METHODS), key=lambda m: -overall[m])
    assert [rows[m][0] for m in ranked] == [str(i + 1) for i in range(len(ranked))]
    assert rows["oracle"][0] == "" and rows["oracle"][1] == "oracle (ceiling)"
    # the ceiling row comes last, after every ranked method
    order = [line.split("|")[2].strip().split(" ")[0] for line in readme.splitlines() if line.startswith("| ")]
    assert order.index("oracle") > max(order.index(m) for m in ranked)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.images: list[str] = []
        self.selects: dict[str, list[str]] = {}
        self._select: str | None = None
        self.links: list[str] = []
        self.external: list[str] = []

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
        if tag in {"script", "link", "img"} and (a.get("src") or a.get("href") or "").startswith(("http", "//")):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def test_html_is_self_contained_with_tables_selectors_and_png_figures(tmp_path, toy_inputs):
    board = _board(tmp_path, toy_inputs)
    page = _Page()
    page.feed(build(board, TaskResolver(toy_inputs["tasks"]))["index.html"])
    assert page.tables == 4  # one per (scenario, K) of the toy task
    assert page.selects == {"task": ["toy"], "scenario": ["seen", "unseen"], "shots": ["1", "5"]}
    assert not page.external
    # 4 critical-difference diagrams (3 ranked methods) + 2 score-vs-shots plots
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
    browser = pytest.importorskip("browser", reason="tests/browser.py (headless chromium helper) is missing")
    board = _board(tmp_path, toy_inputs)
    write = build(board, TaskResolver(toy_inputs["tasks"]))
    for name, text in write.items():
        (board / name).write_text(text)
    shot = browser.screenshot(board / "index.html", tmp_path / "board.png")
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.std() > 10, "screenshot is blank"


def test_committed_leaderboard_is_valid_and_current():
    """What CI runs: the committed board must rebuild byte-identically from its result files."""
    check_board(REPO / "leaderboard", TaskResolver(REPO / "perserbench" / "tasks"))
