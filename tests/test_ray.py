"""Ray: sharded feature extraction is byte-identical to a local one, and a sweep or an
extraction whose Ray worker is killed completes when the same command runs again, with the
results an uninterrupted run gives. All on the session's local 2-CPU cluster (``ray_cluster``)
with a tiny random WavLM and a cut-down synthetic task, so each test takes seconds.

Workers are killed with SIGKILL from inside the task: the test replaces the module attribute
the driver submits (``sharded.extract_shard``, ``executors.run_job``) with a closure that
Ray ships by value; the closure kills its own worker process for the chosen shards/jobs and
otherwise calls the real function, which the worker imports from perserbench itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_task_toml
from corpus_fixtures import write_crema_d, write_tiny_wavlm, write_wav
from typer.testing import CliRunner

from perserbench.cli import app
from perserbench.data import load_corpus
from perserbench.executors import execute, expected_path, is_done, plan
from perserbench.features import sharded
from perserbench.features.cache import entry_dir, extract_features, load_cached_features
from perserbench.features.sharded import WorkersLost

BATCH_SECONDS = 0.8  # 10 clips of 0.15-0.35 s: 5 batches, padded to their longest clip


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for this file's tests: starting one costs seconds, so
    they share it; it stops when they are done, because an idle cluster still uses CPU
    (measured: 3.4 CPU-s a minute) that the rest of the suite would pay for. Ray is a test
    dependency (the dev extra): no skip when absent. Its workers inherit this process's
    environment (PYTHONPATH), so they import perserbench from this checkout, but never this
    test suite."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_wavlm(tmp_path_factory.mktemp("up") / "tiny-wavlm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """A CREMA-D-shaped corpus of clips of different lengths, so that a row's features depend
    on the batch it is padded in (which is what byte-identity must get right). The tests
    share it and its cache, each writing its own feature key."""
    base = tmp_path_factory.mktemp("ray-corpus")
    root = base / "crema"
    write_crema_d(root, actors=(1001, 1002), clips_per_actor=5)
    for i, wav in enumerate(sorted((root / "AudioWAV").glob("*.wav"))):
        write_wav(wav, 0.15 + 0.05 * (i % 5), 16_000, seed=100 + i)
    return load_corpus("crema-d", root=str(root), cache_dir=str(base / "cache"))


@pytest.fixture(scope="module")
def local_entry(corpus, tiny_wavlm: Path) -> Path:
    """The reference: the same corpus extracted in this process."""
    return extract_features(corpus, str(tiny_wavlm), key="local", batch_seconds=BATCH_SECONDS).entry


def _layer_checksums(entry: Path) -> list[str]:
    manifest = json.loads((entry / "manifest.json").read_text())
    return [f["sha256"] for f in manifest["layer_files"]]


def test_ray_extraction_is_byte_identical_to_a_local_one(ray_cluster, corpus, local_entry: Path,
                                                         tiny_wavlm: Path) -> None:
    result = CliRunner().invoke(app, ["features", "extract", "--corpus", "crema-d", "--root",
                                      corpus.metadata["root"], "--upstream", str(tiny_wavlm), "--key", "sharded",
                                      "--cache-dir", corpus.metadata["cache_dir"], "--batch-seconds", str(BATCH_SECONDS),
                                      "--executor", "ray", "--shards", "3"])
    assert result.exit_code == 0, result.output
    assert "extracted now" in result.output and "10 (" in result.output
    sharded_entry = entry_dir(corpus, "sharded")
    assert not sharded_entry.with_name("sharded.partial").exists()
    assert _layer_checksums(sharded_entry) == _layer_checksums(local_entry)
    np.testing.assert_array_equal(load_cached_features(corpus, "sharded"), load_cached_features(corpus, "local"))
    # The check can fail: other batches (here one batch, everything padded to the longest
    # clip) give other bytes.
    one_batch = extract_features(corpus, str(tiny_wavlm), key="one-batch", batch_seconds=100.0)
    assert _layer_checksums(one_batch.entry) != _layer_checksums(local_entry)


def test_killed_worker_mid_extraction_then_the_same_command_completes(ray_cluster, corpus, local_entry: Path,
                                                                      tiny_wavlm: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    once = str(tmp_path / "shard-0-killed-once")

    def killing(spec, index, batches, paths):
        import os
        import signal

        from perserbench.features import sharded as real

        if index == 0 and not os.path.exists(once):  # killed once: Ray's retry completes it
            open(once, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        if index == 2:  # killed on every try: this extraction cannot finish
            os.kill(os.getpid(), signal.SIGKILL)
        return real.extract_shard(spec, index, batches, paths)

    args = {"key": "k", "batch_seconds": BATCH_SECONDS, "executor": "ray", "shards": 3}
    monkeypatch.setattr(sharded, "extract_shard", killing)
    monkeypatch.setattr(sharded, "RAY_RETRIES", 1)  # one retry shows it; each costs a new Ray worker
    with pytest.raises(WorkersLost, match=r"1 of 3 shards failed on Ray \(its Ray worker died.*"
                                          r"run the same command again"):
        extract_features(corpus, str(tiny_wavlm), **args)
    monkeypatch.undo()
    assert Path(once).exists()
    entry = entry_dir(corpus, "k")
    assert not entry.exists() and entry.with_name("k.partial").is_dir()  # shards 0 and 1 are kept

    report = extract_features(corpus, str(tiny_wavlm), **args)
    assert 0 < report.resumed < 10 and report.resumed + report.extracted == 10
    assert _layer_checksums(entry) == _layer_checksums(local_entry)


def test_killed_worker_mid_sweep_then_the_same_command_completes(ray_cluster, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from perserbench import executors

    task = tmp_path / "small.toml"
    task.write_text(synthetic_task_toml())
    grid = (["oracle"], [str(task)], [0, 1], [1], ["unseen"])  # the cheapest method: seconds per job
    sequential = execute(plan(*grid, tmp_path / "sequential"))

    def killing(job):
        import os
        import signal

        from perserbench import executors as real

        if job.seed == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return real.run_job(job)

    command = ["sweep", "--methods", "oracle", "--tasks", str(task), "--shots", "1", "--scenario", "unseen",
               "--seed", "0", "--seed", "1", "--executor", "ray", "--out", str(tmp_path / "ray")]
    monkeypatch.setattr(executors, "run_job", killing)
    monkeypatch.setattr(executors, "RAY_RETRIES", 0)  # retries are tested with extraction; spare the restarts
    first = CliRunner().invoke(app, command)
    monkeypatch.undo()
    assert first.exit_code != 0
    assert "1 of 2 sweep jobs failed on Ray (first: oracle on " in str(first.exception)
    assert "(seed 1): its Ray worker died" in str(first.exception)
    jobs = plan(*grid, tmp_path / "ray")
    assert [is_done(j) for j in jobs] == [True, False]  # seed 0's result was not lost

    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert "2 jobs, 1 already finished, 1 to run" in again.output
    for job, reference in zip(jobs, sequential):
        assert json.loads(expected_path(job).read_text())["episodes"] == \
            json.loads(Path(reference).read_text())["episodes"]


def test_cuda_tasks_on_a_cluster_without_gpus_are_refused_not_left_waiting(ray_cluster, corpus,
                                                                           tiny_wavlm: Path) -> None:
    from perserbench.errors import PerserbenchError

    with pytest.raises(PerserbenchError, match="--device cuda with --executor ray, but the Ray cluster has no GPUs"):
        extract_features(corpus, str(tiny_wavlm), key="gpu", device="cuda", executor="ray")
    assert not entry_dir(corpus, "gpu").with_name("gpu.partial").exists()


def test_shards_finished_before_the_driver_died_are_merged_on_the_next_run(corpus, monkeypatch: pytest.MonkeyPatch
                                                                           ) -> None:
    """No cluster needed: a local extraction is interrupted after its first batch, then the
    rest is written as one shard file (by the function a Ray worker runs, called here), as
    if the driver had died before copying it. The next run copies the shard and embeds nothing."""
    import torch

    from perserbench.features import upstreams
    from perserbench.features.sharded import ShardSpec, extract_shard

    original = upstreams.FbankUpstream._forward
    calls = {"n": 0}

    def dies_on_second_batch(self, waves):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, waves)

    monkeypatch.setattr(upstreams.FbankUpstream, "_forward", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_features(corpus, "fbank", key="driver-died", batch_seconds=BATCH_SECONDS)
    monkeypatch.undo()
    partial = entry_dir(corpus, "driver-died").with_name("driver-died.partial")
    done = np.load(partial / "done.npy")
    rest = [b for b in json.loads((partial / "batches.json").read_text())["batches"] if not done[b].any()]
    assert 0 < done.sum() < 10 and rest
    paths = [u.audio_path for u in corpus.utterances]
    spec = ShardSpec("fbank", upstreams.FbankUpstream().revision, None, False, None, str(partial / "shards"),
                     torch.get_num_threads())
    extract_shard(spec, 0, rest, [[paths[r] for r in b] for b in rest])

    before = upstreams.forward_count()
    report = extract_features(corpus, "fbank", key="driver-died", batch_seconds=BATCH_SECONDS)
    assert (report.resumed, report.extracted, upstreams.forward_count() - before) == (10, 0, 0)
    fresh = extract_features(corpus, "fbank", key="fbank-fresh", batch_seconds=BATCH_SECONDS)
    assert _layer_checksums(report.entry) == _layer_checksums(fresh.entry)
