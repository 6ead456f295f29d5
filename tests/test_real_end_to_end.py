"""Real-format corpus → tiny random WavLM features → methods → a valid result file; and the
bundled real-corpus task specs resolve on fixture trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_fixtures import write_crema_d, write_iemocap, write_msp_podcast, write_tiny_wavlm
from rich.console import Console
from typer.testing import CliRunner

from perserbench.cli import app
from perserbench.data import load_corpus
from perserbench.episodes import split_hash
from perserbench.errors import PerserbenchError
from perserbench.features import upstreams
from perserbench.features.cache import extract_features
from perserbench.leaderboard import TaskResolver, validate_result
from perserbench.results import load_result
from perserbench.tasks import load_task, load_task_spec

TASK = """
name = "iemocap-fixture"
version = "0.1"
[corpus]
name = "iemocap"
features = "tiny-wavlm"
labels = ["neutral", "happy", "sad", "angry", "frustrated", "excited"]
label_map = {{ "Neutral state" = "neutral", "Happiness" = "happy", "Sadness" = "sad", "Anger" = "angry", "Frustration" = "frustrated", "Excited" = "excited" }}
options = {{ root = "{root}" }}
[listeners]
folds = 2
seed = 3
[utterances]
split = "session"
heldout = ["Ses03"]
[episodes]
shots = [1, 2]
query = 4
min_query = 3
episodes = 2
seed = 5
"""

FAST = {"consensus": ["epochs=3", "hidden=16"],
        "meta-perser": ["hidden=16", "meta_epochs=2", "steps_per_epoch=2", "first_order_epochs=1", "meta_batch=2",
                        "support=2", "query=3", "inner_steps=2"]}


def test_iemocap_tiny_wavlm_extract_then_consensus_and_meta_perser(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import perserbench.cli.features as cli_features
    import perserbench.cli.run as cli_run

    monkeypatch.setenv("PERSERBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cli_features, "console", Console(width=200))
    monkeypatch.setattr(cli_run, "console", Console(width=200))
    root = tmp_path / "IEMOCAP_full_release"
    write_iemocap(root, sessions=(1, 2, 3), turns=6)
    model = write_tiny_wavlm(tmp_path / "tiny-wavlm")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "iemocap-fixture.toml").write_text(TASK.format(root=root))
    runner = CliRunner()

    extract = ["features", "extract", "--corpus", "iemocap", "--root", str(root), "--upstream", str(model),
               "--batch-seconds", "2"]
    first = runner.invoke(app, extract)
    assert first.exit_code == 0, first.output
    before = upstreams.forward_count()
    second = runner.invoke(app, extract)
    assert second.exit_code == 0 and "up to date" in second.output
    assert upstreams.forward_count() == before  # no model forward at all

    for method, config in FAST.items():
        args = ["run", "--task", str(tasks / "iemocap-fixture.toml"), "--method", method, "--out", str(tmp_path / "runs")]
        for c in config:
            args += ["--config", c]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (method, result.output, result.exception)
    files = sorted((tmp_path / "runs").glob("*.json"))
    assert len(files) == 2
    resolver = TaskResolver(tasks)
    for path in files:
        res = validate_result(path, resolver)  # schema, task hash, every episode, derived numbers
        assert res.task_name == "iemocap-fixture" and res.episodes
        assert {r.scenario for r in res.episodes} == {"seen", "unseen"}
        assert all(0.0 <= r.macro_f1 <= 1.0 for r in res.episodes)
    assert {load_result(p).method_name for p in files} == {"consensus", "meta-perser"}


def test_run_without_extracted_features_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSERBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "iemo"
    write_iemocap(root, sessions=(1, 2, 3), turns=2, audio_seconds=0.05)
    (tmp_path / "t.toml").write_text(TASK.format(root=root))
    with pytest.raises(PerserbenchError, match="no cached features 'tiny-wavlm' for corpus 'iemocap'.*"
                                               "run: perserbench features extract --corpus iemocap --root "):
        load_task(tmp_path / "t.toml")


def _resolve_bundled(task: str, root: Path, tmp_path: Path) -> None:
    """Resolve a bundled task on a fixture (fbank features stored under the task's key: the
    key is only a name, and fbank is fast)."""
    spec = load_task_spec(task)
    corpus = load_corpus(spec.corpus.name, root=str(root), cache_dir=str(tmp_path / "cache"), **spec.corpus.options)
    extract_features(corpus, "fbank", key=spec.corpus.features)
    resolved = load_task(task, {"root": str(root), "cache_dir": str(tmp_path / "cache")})
    tested = {s: {x for f in resolved.folds for x in f.test.get(s, ())} for s in spec.episodes.scenarios}
    assert all(tested.values()), tested
    assert len(split_hash(resolved)) == 16


def test_bundled_iemocap_task_resolves(tmp_path: Path) -> None:
    write_iemocap(tmp_path / "iemo", sessions=(1, 2, 3, 4, 5), turns=30, audio_seconds=0.05)
    _resolve_bundled("iemocap", tmp_path / "iemo", tmp_path)


def test_bundled_msp_podcast_task_resolves(tmp_path: Path) -> None:
    write_msp_podcast(tmp_path / "msp", podcasts=6, segments=25, audio_seconds=0.05)
    _resolve_bundled("msp-podcast", tmp_path / "msp", tmp_path)


def test_bundled_crema_d_task_resolves(tmp_path: Path) -> None:
    write_crema_d(tmp_path / "crema", actors=tuple(range(1001, 1092)), clips_per_actor=2, raters=5,
                  audio_seconds=0.05)
    _resolve_bundled("crema-d", tmp_path / "crema", tmp_path)
