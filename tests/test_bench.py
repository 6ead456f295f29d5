"""``perserbench bench`` end to end on a tiny problem (fast), and pytest-benchmark timings of
the batched core vs the reference loop at the issue's settings (``-m slow --benchmark-enable``)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from perserbench.bench import (
    BenchSettings,
    _random_problem,
    reference_adapt,
    reference_meta_loss,
)
from perserbench.cli import app
from perserbench.metalearn import (
    adapt_states,
    final_step_weights,
    inner_learning_rates,
    make_form,
    meta_loss,
    meta_parameters,
)


def test_bench_command_reports_every_implementation_and_ratio(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--dim", "16", "--layers", "2", "--listeners", "4", "--shots", "3",
                                      "--support", "3", "--query", "3", "--meta-batch", "2", "--inner-steps", "2",
                                      "--repeats", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    cells = {(t["workload"], t["implementation"]) for t in payload["timings"]}
    workloads = {w for w, _ in cells}
    assert workloads == {"meta-train, second order", "meta-train, first order", "adapt 4 test listeners (K=3)"}
    for w in workloads:
        for impl in ("loop", "vmap (functional_call)", "vmap (dual)"):
            assert (w, impl) in cells
    assert all(t["rate"] > 0 for t in payload["timings"])
    assert "x loop" in result.output and "vmap (dual)" in result.output
    has_l2l = any(i == "learn2learn" for _, i in cells)
    assert has_l2l != ("learn2learn" in payload["skipped"])  # a column, or said to be skipped
    if not has_l2l:
        assert "learn2learn skipped" in result.output


def test_bench_command_rejects_bad_sizes():
    result = CliRunner().invoke(app, ["bench", "--listeners", "0"])
    assert result.exit_code != 0


# ---------------------------------------------------------------- pytest-benchmark (slow)

SETTINGS = BenchSettings()  # meta-batch 8, 5 inner steps, 13 x 768-d features, 100 listeners


@pytest.fixture(scope="module")
def problem():
    return _random_problem(SETTINGS)


def _outer_step(loss_fn):
    def step():
        loss_fn().backward()
    return step


@pytest.mark.slow
@pytest.mark.benchmark(group="meta-train second order")
@pytest.mark.parametrize("impl", ["loop", "functional_call", "dual"])
def test_speed_meta_train_second_order(benchmark, problem, impl):
    head, pos_weight, batch = problem
    meta = meta_parameters(head)
    lrs = inner_learning_rates(SETTINGS.inner_steps, 0.1, learnable=True)
    w = final_step_weights(SETTINGS.inner_steps)
    if impl == "loop":
        fn = lambda: reference_meta_loss(head, meta, lrs, batch, pos_weight, SETTINGS.inner_steps, False, w)
    else:
        form = make_form(head, impl == "dual")
        fn = lambda: meta_loss(form, meta, lrs, batch, pos_weight, SETTINGS.inner_steps, False, w)
    benchmark(_outer_step(fn))


@pytest.mark.slow
@pytest.mark.benchmark(group="adapt 100 listeners")
@pytest.mark.parametrize("impl", ["loop", "functional_call", "dual"])
def test_speed_adapt_100_listeners(benchmark, problem, impl):
    head, pos_weight, _ = problem
    gen = torch.Generator().manual_seed(1)
    s = SETTINGS
    xs = torch.randn(s.listeners, s.shots, s.layers, s.dim, generator=gen)
    ys = (torch.rand(s.listeners, s.shots, s.classes, generator=gen) < 0.3).float()
    ms = torch.ones(s.listeners, s.shots)
    meta = {k: v.detach() for k, v in meta_parameters(head).items()}
    lrs = inner_learning_rates(s.inner_steps, 0.1, learnable=False)
    if impl == "loop":
        benchmark(lambda: reference_adapt(head, meta, lrs, xs, ys, ms, pos_weight, s.inner_steps))
    else:
        form = make_form(head, impl == "dual")
        benchmark(lambda: adapt_states(form, meta, lrs, xs, ys, ms, pos_weight, s.inner_steps))
