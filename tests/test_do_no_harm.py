"""The do-no-harm verdict (issue 13) and the listener-pooled metric in ``compare``, on result
files constructed by hand, so each case (no harm, harmful, inconclusive) is known in advance.

Twelve listeners, one cell; ``consensus`` scores a per-listener value, and each other method
is consensus plus a chosen per-listener difference: tiny (equivalent), clearly positive
(significantly better), clearly negative (harmful), or large with alternating sign (the
equivalence test has no power: inconclusive).
"""

from __future__ import annotations

import numpy as np
import pytest

from perserbench.metrics import listener_aggregates, summarize
from perserbench.report import analyse, build_blocks, combine, render_markdown
from perserbench.results import SCHEMA_VERSION, EpisodeRecord, RunResult
from perserbench.stats import NO_HARM_MARGIN, equivalence_test, no_harm_test

LISTENERS = [f"L{i:02d}" for i in range(12)]
BASE = {x: 0.40 + 0.02 * i for i, x in enumerate(LISTENERS)}
JITTER = np.linspace(-1, 1, len(LISTENERS))  # a fixed, zero-mean spread over listeners
_RNG = np.random.default_rng(13)  # untied differences between any two methods (keeps Wilcoxon exact, fast)
DIFFS = {
    "same": 0.001 * JITTER + _RNG.normal(0, 0.001, 12),  # inside the margin, tightly: equivalent
    "better": 0.05 + 0.005 * JITTER + _RNG.normal(0, 0.001, 12),  # above consensus: significantly better
    "worse": -0.05 + 0.005 * JITTER + _RNG.normal(0, 0.001, 12),  # below consensus: significantly worse
    "noisy": 0.2 * np.where(np.arange(12) % 2, 1.0, -1.0) + _RNG.normal(0, 0.01, 12),  # huge spread
}
EXPECTED = {"same": "no harm", "better": "no harm", "worse": "harmful", "noisy": "inconclusive"}


def _record(listener: str, episode: int, value: float, task_seed: int, tp: list[int] | None = None,
            fp: list[int] | None = None, fn: list[int] | None = None) -> EpisodeRecord:
    return EpisodeRecord(0, listener, "seen", 5, episode, task_seed, 5, 20, value, value, value,
                         tp or [1, 0], fp or [0, 0], fn or [0, 0])


def _result(method: str, task: str, episodes: list[EpisodeRecord]) -> RunResult:
    return RunResult(SCHEMA_VERSION, "test", None, {"name": task, "version": "1", "hash": f"hash-{task}"},
                     {"name": method, "config": {}, "config_hash": f"cfg-{method}", "reference": False,
                      "control": "own"},
                     sorted({r.seed for r in episodes}), ["seen"], [5], episodes, listener_aggregates(episodes),
                     summarize(episodes, n_resamples=200), 0.0,
                     {"ran": True, "passed": True, "episodes": 1, "max_abs_diff": 0.0, "tolerance": 1e-4})


def _results(task: str = "gen", methods: tuple[str, ...] = tuple(DIFFS)) -> list[tuple[str, RunResult]]:
    """consensus and the constructed methods; two episodes per listener around its score."""
    out = []
    for method, diff in [("consensus", np.zeros(len(LISTENERS))), *((m, DIFFS[m]) for m in methods)]:
        eps = [_record(x, e, BASE[x] + d + (0.01 if e else -0.01), 0)
               for x, d in zip(LISTENERS, diff) for e in range(2)]
        out.append((f"<{method}>", _result(method, task, eps)))
    return out


def test_verdicts_follow_the_equivalence_test():
    for name, diff in DIFFS.items():
        test = no_harm_test([dict(zip(LISTENERS, diff))])
        assert test is not None and test.verdict == EXPECTED[name], (name, test)
        assert test == equivalence_test(diff[np.argsort(LISTENERS)], NO_HARM_MARGIN)
    assert no_harm_test([dict(zip(LISTENERS, DIFFS["noisy"]))]).power < 0.2
    assert no_harm_test([{"a": 0.1}]) is None  # one listener: no test


def test_task_verdict_averages_each_listeners_difference_over_the_cells():
    # In one cell a method is far below consensus, in the other far above: per listener the two
    # cancel exactly, so over the task it is equivalent (the cells are not independent samples).
    down = {x: -0.1 + 0.001 * j for x, j in zip(LISTENERS, JITTER)}
    up = {x: 0.1 - 0.001 * j for x, j in zip(LISTENERS, JITTER)}
    assert no_harm_test([down]).verdict == "harmful" and no_harm_test([up]).verdict == "no harm"
    both = no_harm_test([down, up])
    assert both.verdict == "no harm" and both.mean == pytest.approx(0.0, abs=1e-12)
    # listeners missing from a cell are left out of the task's test
    assert no_harm_test([down, {x: v for x, v in up.items() if x != "L00"}]).n == len(LISTENERS) - 1


def test_compare_gives_each_method_its_verdict_and_renders_the_table():
    an = analyse(combine(_results()))
    (cell,) = an.cells
    for method, verdict in EXPECTED.items():
        assert cell.methods[method].no_harm.verdict == verdict, method
        assert an.no_harm["gen"][method].verdict == verdict  # one cell: the task's verdict is the cell's
    assert cell.methods["consensus"].no_harm is None
    markdown = render_markdown(build_blocks(an))
    assert "### Do no harm — gen" in markdown
    rows = {line.split("|")[1].strip(): line for line in markdown.splitlines()
            if line.startswith("| ") and "no harm (" in line or "harmful (" in line or "inconclusive (" in line}
    for method, verdict in EXPECTED.items():
        assert f"{verdict} (" in rows[method]
    assert "power" in rows["noisy"] and "power" not in rows["worse"]


def test_uniform_controls_are_not_friedman_blocks():
    few = ("same", "worse")  # Friedman needs 3 methods; fewer pairs keep the test fast
    results = _results("gen-a", few) + _results("gen-b", few) + _results("gen-a-uniform", few)
    an = analyse(combine(results))
    assert set(an.overall_blocks) == {"gen-a", "gen-b"} and an.overall.n_blocks == 2
    assert an.no_harm["gen-a-uniform"]["worse"].verdict == "harmful"  # verdicts are still given there


def test_pooled_metric_in_compare_pools_counts_over_episodes_and_seeds():
    # Listener A: episode 0 predicts class b wrongly, episode 1 finds it. Per episode: 0.5 and
    # 1.0 (mean 0.75); pooled: a tp 2; b tp 1 fp 1 -> (1 + 2/3) / 2. A second seed repeats the
    # first, which pooling must count twice.
    def eps(seed: int) -> list[EpisodeRecord]:
        return [_record(x, 0, 0.5, seed, [1, 0], [0, 1], [0, 0]) for x in ("A", "B")] + \
               [_record(x, 1, 1.0, seed, [1, 1], [0, 0], [0, 0]) for x in ("A", "B")]
    results = [("<s0>", _result("consensus", "gen", eps(0))), ("<s1>", _result("consensus", "gen", eps(1)))]
    per_episode = analyse(combine(results, "macro_f1")).cells[0].methods["consensus"]
    pooled = analyse(combine(results, "pooled_macro_f1")).cells[0].methods["consensus"]
    assert per_episode.mean == pytest.approx(0.75)
    assert pooled.mean == pytest.approx((1 + 2 / 3) / 2)
    assert pooled.n_listeners == 2
