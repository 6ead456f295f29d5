from pathlib import Path

import pytest
from conftest import TOY_TASK

from perserbench.episodes import split_hash
from perserbench.errors import PerserbenchError
from perserbench.tasks import load_task, load_task_spec, resolve_task


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.toml"
    p.write_text(text)
    return p


def test_folds_rotate_every_eligible_listener_once(toy_task_file):
    task = load_task(toy_task_file)
    tested = [x for f in task.folds for x in f.test["seen"]]
    assert sorted(tested) == sorted(set(tested)) == sorted(task.corpus.listeners)
    for fold in task.folds:
        assert not set(fold.train) & set(fold.test["seen"])


def test_pools_follow_the_heldout_rule(toy_task_file):
    task = load_task(toy_task_file)
    sessions = {u.session for u, ok in zip(task.corpus.utterances, task.heldout_pool) if ok}
    assert sessions == {"S3"}


def test_hash_is_stable_and_changes_with_split_rules(tmp_path, toy_task_file):
    h = split_hash(load_task(toy_task_file))
    assert split_hash(load_task(toy_task_file)) == h
    for old, new in [('heldout = ["S3"]', 'heldout = ["S2"]'), ("folds = 3", "folds = 2"),
                     ("seed = 7", "seed = 8"), ("query = 8", "query = 6"), ("seed = 1", "seed = 2")]:
        changed = TOY_TASK.replace(old, new)
        assert changed != TOY_TASK
        assert split_hash(load_task(write(tmp_path, changed))) != h, old


def test_description_does_not_change_hash(tmp_path, toy_task_file):
    changed = TOY_TASK.replace('version = "0.1"', 'version = "0.1"\ndescription = "other words"')
    assert split_hash(load_task(write(tmp_path, changed))) == split_hash(load_task(toy_task_file))


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("query = 8", "queries = 8", "unknown key 'episodes.queries'"),
        ("folds = 3", 'folds = "three"', "'listeners.folds' must be an integer"),
        ('split = "session"', 'split = "room"', "'utterances.split' must be one of"),
        ('heldout = ["S3"]', 'heldout = ["S9"]', "'utterances.heldout' value 'S9'"),
        ("shots = [1, 5]", "shots = [1, 500]", "no listener has >= 504 labels"),
        ("folds = 3", "folds = 30", "only 6 listeners are eligible"),
        ('[corpus]\nname = "toy"', '[corpus]\nname = "nope"', "unknown corpus 'nope'"),
        ("min_query = 4", "min_query = 40", "exceeds 'episodes.query'"),
    ],
)
def test_bad_specs_name_the_problem(tmp_path, old, new, message):
    text = TOY_TASK.replace(old, new)
    assert text != TOY_TASK
    with pytest.raises(PerserbenchError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_task(write(tmp_path, text))


def test_malformed_toml_and_unknown_task(tmp_path):
    with pytest.raises(PerserbenchError, match="malformed TOML"):
        load_task_spec(write(tmp_path, "name = [unclosed"))
    with pytest.raises(PerserbenchError, match="unknown task 'nope'.*synthetic"):
        load_task_spec("nope")


def test_missing_table(tmp_path):
    text = TOY_TASK.split("[episodes]")[0]
    with pytest.raises(PerserbenchError, match=r"missing table \[episodes\]"):
        load_task_spec(write(tmp_path, text))


def test_bundled_specs_are_valid():
    for name in ("synthetic", "synthetic-uniform"):
        spec = load_task_spec(name)
        assert spec.episodes.shots == (1, 5, 10, 20)
        assert spec.episodes.scenarios == ("seen", "unseen")


def test_corpus_options_override_spec_options(toy_task_file):
    spec = load_task_spec(toy_task_file)
    a = resolve_task(spec)
    b = resolve_task(spec, {"seed": 3})
    assert split_hash(a) != split_hash(b)
