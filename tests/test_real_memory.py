"""Real corpora's cached features in bounded memory (issue 11): the per-layer feature cache read
as :class:`MappedFeatures` (layer files + corpus-row → cache-row map) gives the very floats the
in-memory array held, through every path a run takes (task features, meta-train sets, episodes,
sealed copies, the load-time checks). The hostile-plugin test on these files is parametrized in
tests/test_scale.py; memory at scale is measured by ``benchmarks/scale_memory.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_fixtures import write_cached_task, write_tiny_wavlm

from perserbench import featurerows
from perserbench.data import load_corpus
from perserbench.episodes import MetaTrainSet, all_episodes, episode_items, split_hash
from perserbench.errors import PerserbenchError
from perserbench.featurerows import FeatureRows, MappedFeatures, gather
from perserbench.features import cache as feature_cache
from perserbench.features.cache import entry_dir, load_cached_features
from perserbench.runner import run
from perserbench.tasks import load_task, load_task_spec

L, D = 3, 5


def _layer_files(folder: Path, n_cache: int = 30, n: int = 20, seed: int = 0) -> tuple[MappedFeatures, np.ndarray]:
    """Layer files ``[n_cache, D]`` as the cache writes them, a shuffled subset of their rows as
    a corpus's rows, and the array ``load_cached_features`` built from them before (one float32
    copy, layer by layer)."""
    rng = np.random.default_rng(seed)
    stored = rng.normal(size=(n_cache, L, D)).astype(np.float32)
    for layer in range(L):
        np.save(folder / f"layer_{layer:02d}.npy", stored[:, layer])
    rows = rng.permutation(n_cache)[:n]
    old = np.empty((n, L, D), dtype=np.float32)
    for layer in range(L):
        old[:, layer, :] = np.load(folder / f"layer_{layer:02d}.npy", mmap_mode="r")[rows]
    files = [np.load(folder / f"layer_{layer:02d}.npy", mmap_mode="r") for layer in range(L)]
    return MappedFeatures(files, rows), old


def test_mapped_layer_files_index_like_the_array_they_replace(tmp_path: Path, monkeypatch) -> None:
    mapped, old = _layer_files(tmp_path)
    monkeypatch.setattr(featurerows, "BATCH_BYTES", 3 * L * D * 4)  # 3 rows a batch: many batches
    assert (mapped.shape, mapped.dtype, len(mapped), mapped.ndim) == (old.shape, old.dtype, 20, 3)
    mask = np.arange(20) % 3 == 1
    for idx in (4, -1, slice(2, 17, 3), mask, np.array([[5, 0], [19, 5]]), torch.tensor([7, 2, 7])):
        got, want = mapped[idx], old[idx.numpy() if isinstance(idx, torch.Tensor) else idx]
        assert got.dtype == np.float32 and np.array_equal(got, want), idx
    assert np.array_equal(np.asarray(mapped), old)
    with pytest.raises(IndexError):
        mapped[20]
    picked = np.array([3, 11, 12, 19, 0, 8])
    rows, in_memory = FeatureRows(mapped, picked), FeatureRows(old, picked)
    assert rows.file_backed and not in_memory.file_backed
    assert torch.equal(rows[torch.tensor([5, 1, 1])], in_memory[torch.tensor([5, 1, 1])])
    assert all(torch.equal(a, b) for a, b in zip(rows.mean_std(), in_memory.mean_std()))  # batched either way
    assert torch.equal(gather(mapped, np.array([[1, 2], [2, 9]])), gather(old, np.array([[1, 2], [2, 9]])))
    blob = pickle.dumps(mapped)
    assert len(blob) < 2_000 + 8 * len(mapped)  # paths and the row map, not the rows
    assert np.array_equal(pickle.loads(blob)[:], old)
    with pytest.raises(ValueError, match="row map"):
        MappedFeatures([np.load(tmp_path / "layer_00.npy", mmap_mode="r")], np.array([0, 30]))
    np.save(tmp_path / "short.npy", np.zeros((29, D), dtype=np.float32))
    with pytest.raises(ValueError, match="differ in dtype, rows or dimension"):
        MappedFeatures([np.load(tmp_path / "layer_00.npy", mmap_mode="r"), np.load(tmp_path / "short.npy", mmap_mode="r")])


def test_mapped_features_read_the_files_they_opened_even_when_replaced(tmp_path: Path) -> None:
    mapped, old = _layer_files(tmp_path)
    np.save(tmp_path / "new.npy", np.ones((30, D), dtype=np.float32))
    os.replace(tmp_path / "new.npy", tmp_path / "layer_00.npy")  # what a re-extraction's rename does
    assert np.load(tmp_path / "layer_00.npy")[0, 0] == 1.0
    assert np.array_equal(mapped[:], old)  # a run never mixes two extractions' rows


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_wavlm(tmp_path_factory.mktemp("up") / "tiny-wavlm")


@pytest.fixture(scope="module")
def cached_task(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cached_task(tmp_path_factory.mktemp("real-memory"), tiny_model)


def _corpus(task: Path):
    spec = load_task_spec(task)
    return load_corpus(spec.corpus.name, **spec.corpus.options)


def test_a_large_entry_loads_as_mapped_features_with_the_same_values(cached_task: Path, monkeypatch) -> None:
    corpus = _corpus(cached_task)
    small = load_cached_features(corpus, "tiny-wavlm")
    assert type(small) is np.ndarray and small.shape == (16, 3, 32) and small.dtype == np.float32
    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", small.nbytes)  # the bound itself: still in memory
    assert type(load_cached_features(corpus, "tiny-wavlm")) is np.ndarray
    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", small.nbytes - 1)
    big = load_cached_features(corpus, "tiny-wavlm")
    assert isinstance(big, MappedFeatures) and (big.shape, big.dtype) == (small.shape, small.dtype)
    entry = entry_dir(corpus, "tiny-wavlm")
    assert big.files == tuple(str(entry / f"layer_{i:02d}.npy") for i in range(3))
    ids = json.loads((entry / "manifest.json").read_text())["ids"]
    rows = [ids.index(u.id) for u in corpus.utterances]
    assert rows == list(range(15, -1, -1))  # the fixture's reversed manifest: the map matters
    before = np.stack([np.load(entry / f"layer_{i:02d}.npy")[rows] for i in range(3)], axis=1)  # the old load
    assert np.array_equal(small, before) and np.array_equal(big[:], before)


def test_a_run_on_mapped_cache_features_is_the_run_on_the_in_memory_array(cached_task: Path, monkeypatch) -> None:
    in_memory = load_task(cached_task)
    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", 0)
    mapped = load_task(cached_task)
    assert type(in_memory.features) is np.ndarray and isinstance(mapped.features, MappedFeatures)
    assert split_hash(mapped) == split_hash(in_memory)
    for fold in mapped.folds:
        train, reference = MetaTrainSet(mapped, fold), MetaTrainSet(in_memory, fold)
        assert train.features.file_backed and torch.equal(train.features[:], reference.features[:])
        blob = pickle.dumps(train.features)
        assert len(blob) < 2_000 + 8 * len(train.features) < train.features.row_bytes * len(train.features)
        assert torch.equal(pickle.loads(blob)[:], reference.features[:])
    episodes = list(all_episodes(mapped))
    assert episodes and [ep.key for ep in episodes] == [ep.key for ep in all_episodes(in_memory)]
    for ep in episodes:
        (support, query, truth), (ref_support, ref_query, ref_truth) = (episode_items(t, ep) for t in (mapped, in_memory))
        assert torch.equal(support.x, ref_support.x) and torch.equal(query.x, ref_query.x)
        assert torch.equal(support.y, ref_support.y) and np.array_equal(truth, ref_truth)
    config = {"epochs": "3", "hidden": "16"}
    a, b = (run("consensus", task, [1, 2], config_overrides=config, workers=1) for task in (mapped, in_memory))
    assert [dataclasses.asdict(e) for e in a.episodes] == [dataclasses.asdict(e) for e in b.episodes]


def test_a_sealed_copy_of_cache_rows_holds_the_fold_rows_alone(cached_task: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", 0)
    task = load_task(cached_task)
    train = MetaTrainSet(task, task.folds[0])
    monkeypatch.setattr(featurerows, "BATCH_BYTES", 2 * train.features.row_bytes)  # several batches
    copy = train.sealed_copy(tmp_path)
    assert copy.features.files == (str((tmp_path / "features.npy").resolve()),)
    stored = np.load(tmp_path / "features.npy")
    assert stored.dtype == np.float32 and stored.shape == (len(train.features), 3, 32) and len(stored) < len(task.features)
    assert np.array_equal(stored, train.features[:].numpy())


def test_load_checks_hold_for_mapped_cache_features(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    task = write_cached_task(tmp_path, tiny_model)  # a cache of its own: this test damages it
    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", 0)
    corpus = _corpus(task)
    entry = entry_dir(corpus, "tiny-wavlm")
    monkeypatch.setattr(featurerows, "BATCH_BYTES", 3 * 3 * 32 * 4)  # the finite check in several batches
    victim = corpus.utterances[5].id
    row = json.loads((entry / "manifest.json").read_text())["ids"].index(victim)
    assert row != 5
    layer = np.load(entry / "layer_01.npy", mmap_mode="r+")
    layer[row, 7] = np.nan
    layer.flush()
    del layer
    with pytest.raises(PerserbenchError, match=rf"features 'tiny-wavlm' of utterance '{victim}' \(audio .*\) "
                                               r"contain NaN or inf \(1 utterance"):
        load_task(task)
    with open(entry / "layer_02.npy", "r+b") as f:
        f.truncate(100)
    with pytest.raises(PerserbenchError, match=r"are damaged .*layer_02\.npy has 100 bytes"):
        load_task(task)
