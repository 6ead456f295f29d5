import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perserbench.episodes import split_hash
from perserbench.results import RunResult, load_result, write_atomic
from perserbench.runner import result_filename, run, write_result
from perserbench.tasks import load_task

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy(toy_task_file):
    return load_task(toy_task_file)


def metrics_of(result: RunResult):
    return [(r.listener, r.scenario, r.shots, r.episode, r.macro_f1, r.micro_f1, r.top1) for r in result.episodes]


def test_same_seed_gives_identical_metrics(toy):
    a = run("consensus", toy, [1, 5], seeds=[0])
    b = run("consensus", toy, [1, 5], seeds=[0])
    assert metrics_of(a) == metrics_of(b)
    assert a.summary == b.summary
    c = run("consensus", toy, [1, 5], seeds=[1])
    assert metrics_of(c) != metrics_of(a)


def test_result_covers_every_episode_and_round_trips(toy, tmp_path):
    result = run("consensus", toy, [5], scenarios=["unseen"], seeds=[0, 1])
    n_listeners = sum(len(f.test["unseen"]) for f in toy.folds)
    assert len(result.episodes) == 2 * n_listeners * toy.spec.episodes.episodes
    assert {r.scenario for r in result.episodes} == {"unseen"}
    assert result.task["hash"] == split_hash(toy) and result.method["name"] == "consensus"
    from perserbench.methods.consensus import ConsensusConfig

    assert result.method["config"] == dataclasses.asdict(ConsensusConfig())
    out = tmp_path / "results"
    path = write_result(result, out)
    assert path.name == result_filename(result)
    loaded = load_result(path)
    assert loaded.to_json() == result.to_json()
    assert [p.name for p in out.iterdir()] == [path.name]  # no temp file left behind


def test_a_cell_run_alone_equals_the_same_cell_in_a_bigger_run(toy):
    alone = run("consensus", toy, [5], scenarios=["seen"])
    both = run("consensus", toy, [1, 5], scenarios=["seen", "unseen"])
    pick = [m for m in metrics_of(both) if m[1] == "seen" and m[2] == 5]
    assert metrics_of(alone) == pick


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_malformed_result_file_is_reported(tmp_path):
    from perserbench.errors import PerserbenchError

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PerserbenchError, match="bad.json: not valid JSON"):
        load_result(bad)
    bad.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(PerserbenchError, match="schema_version 99"):
        load_result(bad)


def test_oracle_beats_consensus_on_synthetic_but_not_on_uniform():
    """The synthetic corpus must reward personalization, and the uniform variant must not."""
    gaps = {}
    for name in ("synthetic", "synthetic-uniform"):
        task = load_task(name)
        scores = {}
        for method in ("consensus", "oracle"):
            result = run(method, task, [5], scenarios=["unseen"])
            per_listener = {r.listener: r.macro_f1 for r in result.listeners}
            scores[method] = per_listener
        diffs = np.array([scores["oracle"][k] - scores["consensus"][k] for k in scores["oracle"]])
        gaps[name] = (diffs.mean(), (diffs > 0).mean())
    mean_gap, share_better = gaps["synthetic"]
    assert mean_gap > 0.05 and share_better >= 0.8, gaps
    assert gaps["synthetic-uniform"][0] < mean_gap / 2, gaps


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "perserbench", "--help"], check=False, capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0 and "run" in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--task", "nope"], "unknown task 'nope'"),
        (["--scenario", "sideways"], "unknown scenario 'sideways'"),
        (["--shots", "3"], "K=3 is not a shot count"),
        (["--config", "epochs"], "must look like key=value"),
        (["--config", "nope=1"], "has no config option 'nope'"),
        (["--config", "epochs=many"], "is not a valid int"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, toy_task_file, args, message):
    out = tmp_path / "out"
    base = ["run", "--task", str(toy_task_file), "--out", str(out)]
    code, _, err = cli(*base, *args)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists() or not any(out.iterdir())


def test_cli_malformed_task_file(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[corpus\n")
    code, _, err = cli("run", "--task", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "malformed TOML" in err


def test_cli_run_prints_table_and_writes_result(cli, tmp_path, toy_task_file):
    code, out, err = cli("run", "--method", "consensus", "--task", str(toy_task_file), "--shots", "5",
                         "--out", str(tmp_path))
    assert code == 0, err
    assert "macro-F1" in out and "unseen" in out
    (path,) = tmp_path.glob("*.json")
    assert load_result(path).shots == [5]
