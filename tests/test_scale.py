"""Corpus scale with bounded memory (issue 11): float16 synthetic features streamed to the
cache, :class:`FeatureRows` reading them in batches, and the pieces that keep a run's memory
bounded (units, calibrate's prior groups). Every corpus here is tiny; the real sizes are
measured by ``benchmarks/scale_memory.py``."""

from __future__ import annotations

import hashlib
import json
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from perserbench import featurerows
from perserbench.data.synthetic import generate, world
from perserbench.data.synthetic.storage import feature_path, write_features
from perserbench.episodes import Episode, LabelledItems, MetaTrainSet, episode_items
from perserbench.errors import PerserbenchError
from perserbench.featurerows import FeatureRows
from perserbench.leaderboard.validate import TaskResolver
from perserbench.method import FixedProbabilities, Method
from perserbench.methods.calibrate import (
    fit_prior,
    fit_prior_groups,
    listener_groups,
    listener_table,
)
from perserbench.runner import isolation_units, run
from perserbench.tasks import load_task, load_task_spec, tasks_dir


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSERBENCH_CACHE", str(tmp_path / "cache"))
    generate.cache_clear()  # a corpus cached by an earlier test maps another cache folder
    yield tmp_path / "cache"
    generate.cache_clear()


def test_streamed_features_equal_the_chunked_draw_in_memory(tmp_path, monkeypatch):
    """Written chunk by chunk into the .npy file = all chunks drawn at once; a chunk is a pure
    function of its index (drawn alone, in any order, it has the same values)."""
    monkeypatch.setattr(world, "CHUNK_ROWS", 7)
    w = world.draw_world(np.random.default_rng(3), 40, layers=4, dim=6, chunked=True)
    assert w.features is None and w.recipe.chunks == 6
    path = tmp_path / "f.npy"
    write_features(w.recipe, path, "float16")
    stored = np.load(path, mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (40, 4, 6)
    assert np.array_equal(stored, w.recipe.array("float16"))
    assert np.array_equal(w.recipe.chunk(3), w.recipe.array()[21:28])
    assert not list(tmp_path.glob("*.partial*"))


def test_default_draw_keeps_the_layer_noise_and_the_in_memory_path():
    assert np.array_equal(world.layer_noise(3), world.LAYER_NOISE)
    noise = world.layer_noise(25)
    assert noise[0] == 0.6 and noise[12] == 0.3 and noise[-1] == 0.45 and noise.argmin() == 12
    w = world.draw_world(np.random.default_rng(0), 20)
    assert w.recipe is None and w.features.shape == (20, 3, 768) and w.features.dtype == np.float32


def test_float16_corpus_is_memory_mapped_from_the_cache_and_reused(cache):
    small = generate(0, utterances=100, layers=4, dim=8, dtype="float16")
    feats = small.features["synthetic"]
    assert isinstance(feats, np.memmap) and feats.dtype == np.float16 and feats.shape == (100, 4, 8)
    path = feature_path(0, 100, 4, 8, "float16")
    assert path.parent.parent == cache and path.exists()
    stamp = path.stat().st_mtime_ns
    generate.cache_clear()
    again = generate(0, utterances=100, layers=4, dim=8, dtype="float16")
    assert path.stat().st_mtime_ns == stamp and np.array_equal(again.features["synthetic"], feats)
    # listeners and labels do not depend on the feature shape of a float16 corpus
    other = generate(0, utterances=100, layers=2, dim=5, dtype="float16")
    assert np.array_equal(other.annotations.labels, small.annotations.labels)
    assert np.isfinite(feats).all() and 0.1 < float(np.abs(feats.astype(np.float32)).std()) < 10


def test_float32_corpora_too_large_for_memory_are_refused_with_the_fix(cache):
    with pytest.raises(PerserbenchError, match="use dtype=float16"):
        generate(0, utterances=160000, layers=25, dim=1024)
    with pytest.raises(PerserbenchError, match="dtype"):
        generate(0, utterances=100, dtype="float64")


def test_feature_rows_read_through_the_map_equal_the_in_memory_rows(tmp_path, monkeypatch):
    data = np.random.default_rng(0).normal(size=(50, 3, 4)).astype(np.float16)
    path = tmp_path / "x.npy"
    np.save(path, data)
    mapped = np.load(path, mmap_mode="r")
    index = np.array([4, 9, 1, 30, 31, 49, 0])
    memory, file = FeatureRows(data, index), FeatureRows(mapped, index)
    assert file.file_backed and not memory.file_backed and len(file) == 7 and file.shape == (7, 3, 4)
    idx = torch.tensor([[6, 0, 2], [2, 2, 5]])
    assert file[idx].dtype == torch.float32 and file[idx].shape == (2, 3, 3, 4)
    assert torch.equal(file[idx], memory[idx]) and torch.equal(file[1:5], memory[1:5]) and torch.equal(file[3], memory[3])
    assert torch.equal(file[idx], torch.from_numpy(data[index].astype(np.float32))[idx])
    # many small batches (the map dropped between them) give the same rows and statistics
    monkeypatch.setattr(featurerows, "BATCH_BYTES", 3 * file.row_bytes)
    assert file.batch_rows == 3
    assert torch.equal(file[idx], memory[idx])
    mean, std = file.mean_std()
    x = memory.materialize().double()
    assert torch.allclose(mean.double(), x.mean(0), atol=1e-6) and torch.allclose(std.double(), x.std(0), atol=1e-6)
    assert torch.allclose(file.map(lambda b: b.sum(-1)), x.sum(-1).float())
    with pytest.raises(IndexError):
        file[torch.tensor([7])]
    # a file-backed set pickles as a reference to the file, not as its rows
    assert len(pickle.dumps(file)) < 2000 and torch.equal(pickle.loads(pickle.dumps(file))[idx], memory[idx])


def test_rows_are_read_without_mapping_the_file_and_a_short_file_says_so(tmp_path):
    data = np.random.default_rng(2).normal(size=(40, 2, 5)).astype(np.float16)
    path = tmp_path / "x.npy"
    np.save(path, data)
    rows = FeatureRows(np.load(path, mmap_mode="r"))
    before = Path("/proc/self/maps").read_text().count(str(path))
    idx = torch.tensor([39, 0, 1, 2, 17, 18, 5])  # unsorted, with runs of consecutive rows
    assert torch.equal(rows[idx], torch.from_numpy(data.astype(np.float32))[idx])
    assert Path("/proc/self/maps").read_text().count(str(path)) == before  # read, never mapped
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(OSError, match=r"bytes short reading features .*truncated file"):
        rows[torch.tensor([39])]


def test_one_batch_reductions_are_exactly_the_tensor_computation():
    """Why existing results stay byte-identical: rows that fit one batch are reduced exactly
    as the float32 tensor of them always was."""
    data = np.random.default_rng(1).normal(size=(60, 3, 8)).astype(np.float32)
    rows = FeatureRows(data, np.arange(5, 60))
    x = torch.from_numpy(data[5:])
    mean, std = rows.mean_std()
    assert torch.equal(mean, x.mean(0)) and torch.equal(std, x.std(0))
    assert torch.equal(rows.map(lambda b: b.pow(2).sum(-1)), x.pow(2).sum(-1))
    perm = torch.randperm(55)
    assert torch.equal(rows[perm[:16]], x[perm[:16]])


@pytest.fixture
def float16_task(cache):
    return load_task("synthetic", {"dtype": "float16", "utterances": 600, "layers": 2, "dim": 16})


def test_memory_mapped_task_trains_on_the_same_rows_without_a_copy(float16_task):
    task = float16_task
    assert isinstance(task.features, np.memmap) and task.features.dtype == np.float16
    fold = task.folds[0]
    train = MetaTrainSet(task, fold)
    assert train.features.file_backed
    blob = pickle.dumps(train)
    assert len(blob) < 200_000  # the annotations and a file reference, not [U, L, D] features
    shipped = pickle.loads(blob)
    ann = task.corpus.annotations
    rows = np.flatnonzero(np.isin(ann.listener, fold.train) & task.train_pool[ann.utterance])
    utts = np.unique(ann.utterance[rows])
    expected = torch.from_numpy(np.asarray(task.features[utts], dtype=np.float32))
    assert torch.equal(shipped.features[:], expected) and torch.equal(shipped.x, expected)
    assert "x" not in pickle.loads(pickle.dumps(shipped)).__dict__  # a materialised copy never travels
    items = shipped.listener_items(shipped.listeners[0])
    assert items.x.dtype == torch.float32 and items.x.shape[1:] == (2, 16)
    ep = Episode(0, fold.test["seen"][0], "seen", 1, 0, support=np.array([rows[0]]), query=np.array([rows[1]]))
    support, query, _ = episode_items(task, ep)
    assert support.x.dtype == torch.float32 and torch.equal(
        query.x, torch.from_numpy(np.asarray(task.features[ann.utterance[[rows[1]]]], dtype=np.float32)))


def test_units_hold_at_most_max_listeners_and_one_episode_per_listener():
    episodes = [Episode(0, f"L{j:02d}", "seen", 5, e, np.array([0]), np.array([1])) for e in range(2) for j in range(7)]
    units = isolation_units(episodes, max_listeners=3)
    assert [len(u) for u in units] == [3, 3, 1, 3, 3, 1]
    assert all(len({ep.listener for ep in u}) == len(u) and len({ep.index for ep in u}) == 1 for u in units)
    assert sorted(ep.key for u in units for ep in u) == sorted(ep.key for ep in episodes)
    assert [len(u) for u in isolation_units(episodes)] == [7, 7]  # small folds: one unit per episode index


def test_calibrate_prior_in_listener_groups_matches_one_table(float16_task):
    train = MetaTrainSet(float16_task, float16_task.folds[0])
    logits = torch.randn(len(train.features), train.n_classes, dtype=torch.float64)
    one = listener_groups(train, logits, "diagonal")
    assert len(one) == 1 and all(torch.equal(a, b) for a, b in zip(one[0], listener_table(train, logits)))
    many = listener_groups(train, logits, "diagonal", budget=400 * train.n_classes * 2)
    assert len(many) > 1 and sum(len(g[0]) for g in many) == len(one[0][0])
    weight = torch.ones(train.n_classes, dtype=torch.float64)
    mu1, var1 = fit_prior(*one[0], weight, "diagonal", 3, 0.05, 10)
    mu2, var2, _ = fit_prior_groups(many, weight, "diagonal", 3, 0.05, 10)
    assert torch.allclose(mu1, mu2, atol=1e-8) and torch.allclose(var1, var2, atol=1e-8)


def test_the_scale_task_is_msp_podcast_shaped_and_never_ranked():
    spec = load_task_spec("synthetic-msp-scale")
    options = spec.corpus.options
    assert spec.purpose == "scale" and not spec.ranked and not spec.is_development
    assert options["utterances"] >= 150_000 and options["listeners"] >= 2_000 and options["workload"] == "zipf"
    assert (options["layers"], options["dim"], options["dtype"]) == (25, 1024, "float16")
    info = TaskResolver(tasks_dir()).get("synthetic-msp-scale", "here")  # refused unresolved (no 8 GB)
    assert info.development and info.required == {}


class ReadsItsFeatureFile(Method):
    """Opens the files behind the feature reference it was handed and notes (a digest of the
    first layer of) every row there, in a report file: a file-backed corpus's feature files (one
    ``[N, L, D]`` file, or the cache's layer files) hold the held-out pool too, whose features a
    method must never see in meta-training (DESIGN §2, ``unseen``)."""

    @dataclass
    class Config:
        report: str = ""

    def meta_fit(self, train: MetaTrainSet) -> None:
        self.rate_ = train.y.mean(dim=0, keepdim=True)
        reached = [_digest(row) for path in train.features.files for row in np.load(path, mmap_mode="r")]
        with open(self.config.report, "a") as f:
            f.write(json.dumps({"own": len(train.features), "reached": reached}) + "\n")

    def adapt(self, support: LabelledItems) -> FixedProbabilities:
        rate = self.rate_
        return FixedProbabilities(lambda x: torch.logit(rate.expand(len(x), -1), eps=1e-4))


def _digest(row: np.ndarray) -> str:
    """Of a row's first layer: ``[L, D]`` (a task's row, an ``[N, L, D]`` file's) or ``[D]`` (a layer file's)."""
    first = np.reshape(row, (-1, np.shape(row)[-1]))[0]
    return hashlib.sha1(np.ascontiguousarray(first, dtype=np.float32).tobytes()).hexdigest()


@pytest.fixture
def mapped_cache_task(tmp_path_factory, monkeypatch):
    """A real-format corpus whose cached per-layer features load as MappedFeatures."""
    from corpus_fixtures import write_cached_task, write_tiny_wavlm

    from perserbench.features import cache as feature_cache

    folder = tmp_path_factory.mktemp("cached")
    task = write_cached_task(folder, write_tiny_wavlm(folder / "tiny-wavlm"))
    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", 0)
    return load_task(task)


@pytest.mark.parametrize("source", ["float16_task", "mapped_cache_task"])
def test_a_sealed_worker_cannot_reach_held_out_features_through_its_feature_file(source, request, tmp_path,
                                                                                   monkeypatch):
    task = request.getfixturevalue(source)
    assert FeatureRows(task.features).file_backed
    heldout = {_digest(task.features[u]) for u in np.flatnonzero(~task.train_pool)}
    assert heldout
    unsealed = tmp_path / "unsealed.jsonl"
    ReadsItsFeatureFile(ReadsItsFeatureFile.Config(str(unsealed))).meta_fit(MetaTrainSet(task, task.folds[0]))
    assert heldout <= set(json.loads(unsealed.read_text())["reached"]), "the trick must work unsealed"

    made: list[str] = []  # the private folders the runner makes (not multiprocessing's own)

    def mkdtemp(*args, **kwargs):
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    sealed = tmp_path / "sealed.jsonl"
    run(ReadsItsFeatureFile(ReadsItsFeatureFile.Config(str(sealed))), task, [1], ["unseen"])
    reports = [json.loads(line) for line in sealed.read_text().splitlines()]
    assert len(reports) == len(task.folds)
    folds = [sorted(_digest(row) for row in MetaTrainSet(task, fold).features[:].numpy()) for fold in task.folds]
    for report in reports:  # folds meta-fit in parallel: the reports come in either order
        assert len(report["reached"]) == report["own"]  # its own rows, nothing else
        assert sorted(report["reached"]) in folds
        assert not heldout & set(report["reached"])
    private = [Path(p) for p in made if Path(p).name.startswith("perserbench-sealed-")]
    assert len(private) == len(task.folds) and not any(p.exists() for p in private)  # made, and gone


def test_a_sealed_copy_is_the_same_rows_in_the_stored_dtype(float16_task, tmp_path, monkeypatch):
    train = MetaTrainSet(float16_task, float16_task.folds[1])
    monkeypatch.setattr(featurerows, "BATCH_BYTES", 5 * train.features.row_bytes)  # several batches
    copy = train.sealed_copy(tmp_path)
    assert copy.features.file_backed and copy.features.files == (str((tmp_path / "features.npy").resolve()),)
    assert np.load(tmp_path / "features.npy", mmap_mode="r").dtype == np.float16
    assert torch.equal(copy.features[:], train.features[:]) and torch.equal(copy.y, train.y)
    assert copy.listeners == train.listeners and torch.equal(copy.utterance, train.utterance)
    in_memory = MetaTrainSet(load_task("synthetic"), load_task("synthetic").folds[0])
    assert in_memory.sealed_copy(tmp_path / "unused") is in_memory
