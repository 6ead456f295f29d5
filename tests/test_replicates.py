"""Replicate draws: a replicate is its task's protocol on another corpus seed and nothing else,
and the board pools a task's draws into one table whose numbers are those of one result over
all the draws' listeners.

The pooled board is built in a temporary folder from results on a toy task and two replicates
(conftest's ``toy`` corpus takes a ``seed`` option), with the toy methods of test_leaderboard.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TOY_TASK
from test_leaderboard import FAST, _save, _table, _tables

from perserbench.episodes import split_hash
from perserbench.errors import PerserbenchError
from perserbench.leaderboard import TaskResolver, build, load_board
from perserbench.leaderboard.pooled import draw_listener
from perserbench.results import load_result
from perserbench.runner import run
from perserbench.stats import hierarchical_bootstrap_ci, paired_test
from perserbench.tasks import check_replicate, load_task, load_task_spec, task_names

PARENT = TOY_TASK.replace('name = "toy"\nversion', 'name = "toyp"\nversion').replace(
    'features = "toy"', 'features = "toy"\noptions = { seed = 0 }')


def replicate(seed: int, name: str | None = None, of: str = "toyp", text: str = PARENT) -> str:
    return text.replace('name = "toyp"\n', f'name = "{name or f"toyp-draw{seed}"}"\nreplicates = "{of}"\n', 1) \
        .replace("seed = 0 }", f"seed = {seed} }}")


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the specs


def test_every_bundled_replicate_is_its_task_on_another_corpus_seed():
    replicates = {n: load_task_spec(n) for n in task_names() if load_task_spec(n).replicate_of}
    assert sorted(replicates) == sorted(f"{t}-draw{d}" for t in ("synthetic", "synthetic-confusion",
                                                                  "synthetic-prior-shift") for d in (2, 3, 4, 5))
    for spec in replicates.values():
        parent = load_task_spec(spec.replicate_of)
        mine, theirs = spec.as_dict(), parent.as_dict()
        assert mine["corpus"]["options"].pop("seed") != theirs["corpus"]["options"].pop("seed")
        assert {k: v for k, v in mine.items() if k != "name"} == {k: v for k, v in theirs.items() if k != "name"}
        # seed 1 is the development corpora's: a board draw must never be one of them
        assert spec.corpus.options["seed"] not in {load_task_spec(n).corpus.options.get("seed")
                                                   for n in task_names() if load_task_spec(n).is_development}


def test_a_replicate_is_another_corpus_and_its_relation_is_not_part_of_the_hash(tmp_path):
    _write(tmp_path, "toyp", PARENT)
    draw = load_task(_write(tmp_path, "toyp-draw2", replicate(2)))
    assert split_hash(draw) != split_hash(load_task(tmp_path / "toyp.toml"))
    (tmp_path / "alone").mkdir()
    alone = load_task(_write(tmp_path / "alone", "toyp-draw2", replicate(2).replace('replicates = "toyp"\n', "")))
    assert split_hash(alone) == split_hash(draw)


@pytest.mark.parametrize("change,message", [
    (lambda t: t.replace("episodes = 3", "episodes = 4"), "'episodes' differs from 'toyp'"),
    (lambda t: t.replace("seed = 7", "seed = 8"), "'episodes' differs from 'toyp'"),
    (lambda t: t.replace("folds = 3", "folds = 2"), "'listeners' differs from 'toyp'"),
    (lambda t: t.replace('version = "0.1"', 'version = "0.2"'), "'version' differs from 'toyp'"),
    (lambda t: t.replace("seed = 2 }", "seed = 0 }"), "another value than 'toyp' (0)"),
    (lambda t: t.replace("{ seed = 2 }", "{ seed = 2, per_session = 20 }"), "'corpus' differs from 'toyp'"),
    (lambda t: t.replace('replicates = "toyp"', 'replicates = "nope"'), "'nope', which is not a known task"),
])
def test_a_replicate_that_is_not_its_task_on_another_seed_is_refused(tmp_path, change, message):
    _write(tmp_path, "toyp", PARENT)
    text = change(replicate(2))
    assert text != replicate(2)
    path = _write(tmp_path, "toyp-draw2", text)
    with pytest.raises(PerserbenchError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_task_spec(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_replicate_of_a_replicate_and_of_a_seedless_task_are_refused(tmp_path):
    _write(tmp_path, "toyp", PARENT)
    _write(tmp_path, "toyp-draw2", replicate(2))
    with pytest.raises(PerserbenchError, match="'toyp-draw2', which is itself a replicate of 'toyp'"):
        load_task_spec(_write(tmp_path, "toyp-draw3", replicate(3, of="toyp-draw2")))
    _write(tmp_path, "seedless", TOY_TASK.replace('name = "toy"', 'name = "seedless"'))
    with pytest.raises(PerserbenchError, match="'seedless', must state its corpus option 'seed'"):
        load_task_spec(_write(tmp_path, "seedless-draw2", replicate(2, "seedless-draw2", of="seedless")))
    parent, child = load_task_spec(tmp_path / "toyp.toml"), load_task_spec(tmp_path / "toyp-draw2.toml")
    check_replicate(child, parent)  # the pair as written is accepted


# --------------------------------------------------------------------------- the pooled board

DRAWS = ("toyp", "toyp-draw2", "toyp-draw3")
METHODS = ("consensus", "label-prior", "label-support")


@pytest.fixture(scope="module")
def replicate_inputs(tmp_path_factory) -> dict:
    """Tasks toyp (seed 0) and two replicates; the toy methods on each, oracle = lb-truth's
    numbers (as in test_leaderboard); label-support only on two draws in a second folder."""
    from test_leaderboard import _as_reference

    root = tmp_path_factory.mktemp("replicates")
    tasks = root / "tasks"
    tasks.mkdir()
    _write(tasks, "toyp", PARENT)
    for seed in (2, 3):
        _write(tasks, f"toyp-draw{seed}", replicate(seed))
    files: dict[tuple[str, str], Path] = {}
    for name in DRAWS:
        task = load_task(tasks / f"{name}.toml")
        for method in METHODS:
            files[(name, method)] = _save(run(method, task, [1, 5], config_overrides=FAST if method == "consensus"
                                              else None), root / "runs")
        truth = run("lb-truth", task, [1, 5])
        files[(name, "oracle")] = _save(_as_reference(truth, "oracle"), root / "runs")
    return {"tasks": tasks, "files": files}


def _pooled_board(tmp_path: Path, inputs: dict, leave_out: tuple[str, str] | None = None) -> Path:
    board = tmp_path / "board"
    (board / "results").mkdir(parents=True)
    for key, path in inputs["files"].items():
        if key != leave_out:
            shutil.copy(path, board / "results" / path.name)
    return board


def test_a_pooled_cell_is_one_result_over_every_draws_listeners(tmp_path, replicate_inputs):
    board = load_board(_pooled_board(tmp_path, replicate_inputs), TaskResolver(replicate_inputs["tasks"]))
    assert list(board.pooled) == ["toyp"] and board.pooled["toyp"].draws == DRAWS
    assert board.tasks["toyp-draw2"].replicate_of == "toyp" and board.across.blocks == ["toyp"]
    pooled = board.pooled["toyp"]
    results = {key: load_result(path) for key, path in replicate_inputs["files"].items()}
    for key in pooled.cell_keys:
        for method in METHODS:
            groups = {draw_listener(name, listener): [] for name in DRAWS
                      for listener in board.tasks[name].ranked[key][method].per_listener}
            for name in DRAWS:
                for rec in results[(name, method)].episodes:
                    if (rec.scenario, rec.shots) == key:
                        groups[draw_listener(name, rec.listener)].append(rec.macro_f1)
            cell = pooled.ranked[key][method]
            mean, low, high = hierarchical_bootstrap_ci([np.array(groups[x]) for x in sorted(groups)])
            assert (cell.mean, cell.ci_low, cell.ci_high) == pytest.approx((mean, low, high), abs=1e-12)
            assert cell.n_listeners == sum(board.tasks[n].ranked[key][method].n_listeners for n in DRAWS)
            assert cell.pooled_from == tuple(replicate_inputs["files"][(n, method)].name for n in DRAWS)
        # the test against consensus is over the pooled listeners, not an average of the draws' tests
        a, b = pooled.ranked[key]["label-support"], pooled.ranked[key]["consensus"]
        common = sorted(a.per_listener)
        p = paired_test(np.array([a.per_listener[x] for x in common]), np.array([b.per_listener[x] for x in common]))
        assert pooled.comparisons[key]["label-support"].p_value == pytest.approx(p.p_value)
        assert pooled.comparisons[key]["label-support"].n_listeners == len(common) > 16 // 2
        gap = pooled.references[key]["oracle"].mean - b.mean
        assert pooled.headroom[key]["label-support"]["oracle"] == pytest.approx((a.mean - b.mean) / gap)


def test_a_method_missing_on_one_draw_is_not_pooled(tmp_path, replicate_inputs):
    board = load_board(_pooled_board(tmp_path, replicate_inputs, ("toyp-draw3", "label-support")),
                       TaskResolver(replicate_inputs["tasks"]))
    pooled = board.pooled["toyp"]
    assert "label-support" in board.tasks["toyp"].methods() and "label-support" not in pooled.methods()
    assert pooled.methods() == ["consensus", "label-prior"]


def test_the_pages_show_the_pooled_section_and_each_draw(tmp_path, replicate_inputs):
    pages = build(_pooled_board(tmp_path, replicate_inputs), TaskResolver(replicate_inputs["tasks"]))
    readme, index = pages["README.md"], pages["index.html"]
    board = load_board(tmp_path / "board", TaskResolver(replicate_inputs["tasks"]))
    assert "### toyp: 3 corpus draws pooled" in readme
    assert "## toyp-draw2" not in readme  # a replicate is read through the pooled section
    per_draw = _table(readme, "Method", "toyp-draw3")
    assert per_draw[0] == ["Method", *DRAWS]
    for row in per_draw[1:]:
        expected = [next(mean for _, m, mean in board.tasks[n].overall() if m == row[0]) for n in DRAWS]
        assert row[1:] == [f"{v:.3f}" for v in expected]
    ranked = [t for t in _tables(readme) if t[0][:2] == ["Rank", "Method"]]
    assert len(ranked) == 2  # the board task's own table, then the pooled one
    pooled = board.pooled["toyp"]
    first = ranked[1][1]
    assert first[1] == pooled.overall()[0][1]
    assert 'data-task="toyp (3 draws pooled)"' in index and 'data-task="toyp-draw2"' not in index
    assert all(f"results/{replicate_inputs['files'][(n, 'label-prior')].name}" in index for n in DRAWS)


def test_replicates_without_their_task_on_the_board_are_shown_as_tasks(tmp_path, replicate_inputs):
    board_dir = tmp_path / "board"
    (board_dir / "results").mkdir(parents=True)
    for (name, _), path in replicate_inputs["files"].items():
        if name != "toyp":
            shutil.copy(path, board_dir / "results" / path.name)
    resolver = TaskResolver(replicate_inputs["tasks"])
    assert load_board(board_dir, resolver).pooled == {}
    readme = build(board_dir, resolver)["README.md"]
    assert "## toyp-draw2" in readme and "## toyp-draw3" in readme and "corpus draws pooled" not in readme


def test_the_replicated_task_is_found_like_any_task_name(tmp_path, monkeypatch):
    """Its folder passed both ways is one folder, not a clash; two files of that name are."""
    _write(tmp_path, "toyp", PARENT)
    draw = _write(tmp_path, "toyp-draw2", replicate(2))
    monkeypatch.setenv("PERSERBENCH_TASKS", str(tmp_path))
    assert load_task_spec(draw).replicate_of == "toyp"
    (tmp_path / "other").mkdir()
    clash = _write(tmp_path / "other", "toyp", PARENT)
    monkeypatch.setenv("PERSERBENCH_TASKS", str(tmp_path / "other"))
    with pytest.raises(PerserbenchError, match="task name 'toyp' is defined twice") as err:
        load_task_spec(draw)
    assert str(clash.resolve()) in str(err.value)
