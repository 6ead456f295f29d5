"""``benchmarks/family_ceiling.py``: calibrate's transform family given all of a listener's
labels, beside the method at K and the two references (the figures in docs/generators.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from conftest import synthetic_task_toml

from perserbench.episodes import split_hash
from perserbench.runner import run
from perserbench.tasks import load_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from family_ceiling import ROWS, TRANSFORM_ONLY, family_ceiling, main, population_logits


def test_the_family_ceiling_rows_are_the_board_numbers_and_more_labels_help(tmp_path):
    """On a cut-down styles task: the consensus, calibrate-at-K and oracle rows are exactly what
    sealed board runs score (same episodes, same seeds, same decisions; calibrate's transform
    alone, annotator_weight=0, since the transform family is what the script measures), and the
    transform fitted on all of a listener's labels beats consensus where listeners differ."""
    path = tmp_path / "small-styles.toml"
    path.write_text(synthetic_task_toml(options='{ seed = 0, generator = "styles" }', scenarios=("unseen",),
                                        shots=(10,), query=20, episodes=2, episode_seed=11))
    task = load_task(path)
    means = family_ceiling(task, shots=10)["unseen"]
    assert list(means) == list(ROWS)
    for name, method, config in (("consensus", "consensus", None), ("calibrate K", "calibrate", TRANSFORM_ONLY),
                                 ("oracle", "oracle", None)):
        board = next(r.mean for r in run(method, task, [10], config_overrides=config).summary
                     if r.metric == "macro_f1")
        assert abs(means[name] - board) < 1e-9, name
    assert means["calibrate all"] > means["consensus"] + 0.02
    assert means["calibrate K exact"] > means["calibrate K"]  # a perfect base model helps the same transform
    assert means["calibrate all exact"] > means["consensus"] + 0.02
    assert means["oracle"] > max(means[name] for name in ROWS if name != "oracle")


def test_exact_base_logits_are_every_listeners_marginals_when_all_hear_alike(tmp_path):
    """On a uniform control every population listener is the corpus's listener, so the average
    listener's marginals are exactly each listener's true probabilities."""
    path = tmp_path / "small-uniform.toml"
    path.write_text(synthetic_task_toml(options='{ seed = 0, generator = "prior-shift", uniform = true }',
                                        scenarios=("unseen",), shots=(5,), query=20, episodes=2, episode_seed=11))
    task = load_task(path)
    truth = task.corpus.truth
    utterances = np.arange(len(task.corpus.utterances))
    expected = truth.listener_proba(truth.listeners[3], utterances)
    assert np.allclose(torch.sigmoid(population_logits(task, population=50)).numpy(), expected, atol=1e-9)


def test_corpus_seeds_redraw_the_corpus_and_seed_zero_is_the_tasks_own_draw(tmp_path, monkeypatch, capsys):
    """``--corpus-seed``: one block per draw; the task's own seed is the task's own corpus (the
    same split hash: labels, folds, episodes), another seed gives other numbers, and the spread
    line summarises the draws."""
    path = tmp_path / "small-shift.toml"
    path.write_text(synthetic_task_toml(options='{ seed = 0, generator = "prior-shift" }', scenarios=("unseen",),
                                        shots=(5,), query=20, episodes=2, episode_seed=11))
    assert split_hash(load_task(path, {"seed": 0})) == split_hash(load_task(path))
    monkeypatch.setattr(sys, "argv", ["family_ceiling.py", str(path), "--shots", "5",
                                      "--corpus-seed", "0", "--corpus-seed", "3"])
    main()
    draws = capsys.readouterr().out.splitlines()
    assert draws[0].endswith("corpus seed 0: mean macro-F1 over the K=5 episodes of every fold")
    assert draws[2].endswith("corpus seed 3: mean macro-F1 over the K=5 episodes of every fold")
    assert draws[1].split("consensus")[1] != draws[3].split("consensus")[1]  # other listeners, other numbers
    shares = [float(line.split("headroom captured: K=5 ")[1].split("%")[0]) for line in (draws[1], draws[3])]
    summary = draws[4]
    assert summary.strip().startswith("unseen calibrate K=5 over 2 draws")
    assert f"min {min(shares):.0f}%" in summary and f"max {max(shares):.0f}%" in summary
