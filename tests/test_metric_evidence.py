"""benchmarks/metric_evidence.py on constructed results whose evidence is known by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from test_do_no_harm import _record, _result

SPEC = importlib.util.spec_from_file_location(
    "metric_evidence", Path(__file__).resolve().parent.parent / "benchmarks" / "metric_evidence.py")
evidence_module = importlib.util.module_from_spec(SPEC)
sys.modules["metric_evidence"] = evidence_module  # dataclasses look their module up there
SPEC.loader.exec_module(evidence_module)


def _method(name: str, task: str, per_seed: dict[int, float], fp: int = 0):
    """Two listeners, one episode each, with the given macro-F1 per seed; counts tp=[1, 1],
    fp=[0, fp] (so the pooled score is computed from them, not from the macro value)."""
    eps = [_record(x, 0, v, seed, [1, 1], [0, fp], [0, 0]) for seed, v in per_seed.items() for x in ("A", "B")]
    return _result(name, task, eps)


def test_seed_sd_bias_and_ranking_agreement_are_what_the_inputs_say():
    results = [
        _method("consensus", "t", {0: 0.5, 1: 0.7}),
        _method("finetune", "t", {0: 0.6, 1: 0.6}, fp=1),
        _method("calibrate", "t", {0: 0.9, 1: 0.9}),
        _method("consensus", "t-uniform", {0: 0.5, 1: 0.5}),
        _method("finetune", "t-uniform", {0: 0.4, 1: 0.4}, fp=1),
    ]
    ev, agreement, absent = evidence_module.evidence(results, ["t-uniform"])
    macro, pooled = ev
    # per-episode SD across seeds: consensus on t {0.5, 0.7} -> 0.1414; every other (method, cell): 0
    assert macro.n_seed_cells == 5
    assert macro.seed_sd == pytest.approx((0.2 / 2**0.5) / 5)
    assert pooled.seed_sd == 0.0  # the counts do not change with the seed
    assert macro.uniform_bias == {"finetune": pytest.approx(-0.1)}
    # pooled: consensus tp [2, 2] per seed -> 1.0; finetune class b tp 1 fp 1 -> (1 + 2/3) / 2
    assert pooled.uniform_bias == {"finetune": pytest.approx((1 + 2 / 3) / 2 - 1.0)}
    # t ranks calibrate > consensus (0.6) = finetune (0.6) by macro-F1, calibrate = consensus >
    # finetune pooled: the two rankings disagree on the tie only
    assert agreement.n_cells == 1 and agreement.identical == 0 and 0 < agreement.mean_tau < 1
    assert absent == {"absent_share": 0.0, "absent_but_predicted_share": pytest.approx(float("nan"), nan_ok=True)}
