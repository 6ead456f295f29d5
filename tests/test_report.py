"""``perserbench compare``: a report built from result files the runner produced on the tiny
``toy`` task (conftest.py) and a second toy task; refusals of incomparable results; copy/shift
behaviour at the report level; seed merging; references and other-listener controls kept out
of ranks and tests; headroom and personalization gain; Friedman blocks that are independent
(tasks, or listeners within a cell); the HTML page in headless chromium."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TOY_TASK
from scipy import stats as sps

from perserbench.report import analyse, combine, load_comparison, write_report
from perserbench.results import RunResult, load_result, save_result
from perserbench.runner import run, write_result
from perserbench.tasks import load_task

FAST = {"epochs": "2"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Result files written by the runner: consensus (seeds 0 and 1 together, and each alone),
    and two simple registered methods."""
    root = tmp_path_factory.mktemp("report-inputs")
    (root / "toy.toml").write_text(TOY_TASK)
    task = load_task(root / "toy.toml")
    files = {
        "consensus": write_result(run("consensus", task, [1, 5], seeds=[0, 1], config_overrides=FAST), root / "main"),
        "label-prior": write_result(run("label-prior", task, [1, 5]), root / "main"),
        "label-support": write_result(run("label-support", task, [1, 5]), root / "main"),
    }
    for seed in (0, 1):
        files[f"consensus-s{seed}"] = write_result(run("consensus", task, [1, 5], seeds=[seed], config_overrides=FAST),
                                                   root / f"seed{seed}")
    # a second task on another draw of the toy corpus (other features, other episodes)
    (root / "toy-b.toml").write_text(TOY_TASK.replace('name = "toy"', 'name = "toy-b"', 1)
                                     .replace('labels = ["a", "b", "c"]', 'labels = ["a", "b", "c"]\noptions = { seed = 1 }')
                                     .replace("seed = 7", "seed = 8"))
    task_b = load_task(root / "toy-b.toml")
    for method, overrides in (("consensus", FAST), ("label-prior", None), ("label-support", None)):
        files[f"{method}-b"] = write_result(run(method, task_b, [1, 5], config_overrides=overrides), root / "second")
    return files


def _variant(result: RunResult, name: str, shift: float = 0.0, metric: str = "macro_f1") -> RunResult:
    """A copy of ``result`` under another method name with ``shift`` added to every episode."""
    out = dataclasses.replace(result, method={**result.method, "name": name})
    out.episodes = [dataclasses.replace(r, **{metric: getattr(r, metric) + shift}) for r in result.episodes]
    return out


def _constant(result: RunResult, name: str, value: float, **method: object) -> RunResult:
    """``result``'s episodes with a constant macro-F1, filed under method ``name`` (and the
    other ``method`` fields given, e.g. ``reference=True``)."""
    out = dataclasses.replace(result, method={**result.method, "name": name, **method})
    out.episodes = [dataclasses.replace(r, macro_f1=value) for r in result.episodes]
    return out


def _one_line_error(code: int, err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----------------------------------------------------------------------- the report


def test_compare_writes_a_complete_report_from_runner_results(runs, tmp_path, cli):
    out = tmp_path / "report"
    code, stdout, err = cli("compare", runs["consensus"].parent, runs["consensus-b"].parent, "--out", out)
    assert code == 0, err
    assert "consensus" in stdout and "label-support" in stdout and "Friedman across 2 tasks" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "report.json", "report.md"]
    # shots curves per task and scenario, CD across tasks, one CD per cell (3 methods, 6 listeners)
    figures = sorted(p.name for p in (out / "figures").iterdir())
    cells = [f"{t}-{s}-{k}" for t in ("toy", "toy_b") for s in ("seen", "unseen") for k in (1, 5)]
    assert figures == sorted(["cd-overall.png"] + [f"cd-{c}.png" for c in cells]
                             + [f"shots-{t}-{s}.png" for t in ("toy", "toy_b") for s in ("seen", "unseen")])
    md = (out / "report.md").read_text()
    for name in re.findall(r"\]\(figures/([^)]+)\)", md):
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Summary — toy" in md and "## Pairwise comparisons — toy · unseen · K=5" in md
    assert "## Ranks across tasks (Friedman / Nemenyi)" in md
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == len(figures) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert {base64.b64decode(s.split(",", 1)[1]) for s in sources} == {p.read_bytes() for p in (out / "figures").iterdir()}
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained
    assert not list(out.rglob(".*"))  # no temp files left

    doc = json.loads((out / "report.json").read_text())
    assert doc["seeds"] == {"consensus": [0, 1], "label-prior": [0], "label-support": [0]}
    assert len(doc["cells"]) == 8 and all(len(c["pairs"]) == 3 and c["gains"] == [] for c in doc["cells"])
    assert doc["overall_blocks"] == [{"task": t, "cells": [["seen", 1], ["seen", 5], ["unseen", 1], ["unseen", 5]]}
                                     for t in ("toy", "toy-b")]


def test_report_numbers_recompute_from_the_result_files(runs):
    an = analyse(load_comparison([runs["consensus"], runs["label-prior"], runs["label-support"]]))
    files = {m: load_result(runs[m]) for m in ("consensus", "label-prior", "label-support")}
    for cell in an.cells:
        _, scenario, k = cell.key
        per_listener = {}
        for m, r in files.items():
            recs = [x for x in r.listeners if x.scenario == scenario and x.shots == k]
            per_listener[m] = np.array([x.macro_f1 for x in sorted(recs, key=lambda x: x.listener)])
            summary = next(s for s in r.summary if (s.scenario, s.shots, s.metric) == (scenario, k, "macro_f1"))
            assert cell.methods[m].mean == pytest.approx(summary.mean)
            if m != "consensus":  # one seed: the runner's own CI (same bootstrap, same seed)
                assert (cell.methods[m].ci_low, cell.methods[m].ci_high) == pytest.approx((summary.ci_low, summary.ci_high))
        raw = [p.p_value for p in cell.pairs]
        for p in cell.pairs:
            a, b = per_listener[p.a], per_listener[p.b]
            assert p.mean_diff == pytest.approx(np.mean(a - b)) and p.mean_diff >= 0
            expected = 1.0 if np.allclose(a, b) else sps.wilcoxon(a, b).pvalue
            assert p.p_value == pytest.approx(expected)
            m = len(raw)
            rank = sorted(raw).index(p.p_value)
            assert p.p_holm >= min(1.0, (m - rank) * p.p_value) - 1e-12
        ranked = ["consensus", "label-prior", "label-support"]
        scores = np.array([[per_listener[m][i] for m in ranked] for i in range(6)])
        assert cell.friedman.p_value == pytest.approx(sps.friedmanchisquare(*scores.T).pvalue)
        best = max(ranked, key=lambda m: cell.methods[m].mean)
        assert [m for m in ranked if cell.methods[m].best] == [best]
        for m in ranked:
            if m != "consensus":
                pc = next(p for p in cell.pairs if {p.a, p.b} == {m, "consensus"})
                assert bool(cell.methods[m].vs_reference) == (pc.p_holm <= 0.05)
    # the cells of one task share listeners and episodes: they are never the blocks of a Friedman test
    assert an.overall is None and "not independent blocks" in an.overall_note


def test_report_is_deterministic(runs, tmp_path):
    data = load_comparison([runs["consensus"].parent])
    write_report(analyse(data), tmp_path / "a")
    write_report(analyse(data), tmp_path / "b")
    for f in sorted((tmp_path / "a").rglob("*")):
        if f.is_file():
            assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f.name


def test_seeds_in_separate_files_average_like_one_file(runs):
    together = analyse(load_comparison([runs["consensus"]]))
    apart = analyse(load_comparison([runs["consensus-s0"], runs["consensus-s1"]]))
    one = analyse(load_comparison([runs["consensus-s0"]]))
    for a, b, c in zip(together.cells, apart.cells, one.cells):
        assert a.methods["consensus"] == b.methods["consensus"]
        assert a.listener_scores == b.listener_scores
        assert a.listener_scores != c.listener_scores  # the seeds do differ
    # seed averaging is within listener-episode: the listener mean is the mean over both seeds
    r = load_result(runs["consensus"])
    cell = together.cells[0]
    _, scenario, k = cell.key
    recs = [x for x in r.listeners if x.scenario == scenario and x.shots == k]
    assert cell.listener_scores["consensus"] == pytest.approx([x.macro_f1 for x in sorted(recs, key=lambda x: x.listener)])


def test_a_copy_is_not_significantly_different(runs):
    base = load_result(runs["label-support"])
    an = analyse(combine([("a", load_result(runs["consensus"])), ("b", base), ("c", _variant(base, "copy"))]))
    for cell in an.cells:
        pair = next(p for p in cell.pairs if {p.a, p.b} == {"copy", "label-support"})
        assert pair.p_value == 1.0 and pair.p_holm == 1.0 and pair.mean_diff == 0.0
        assert pair.ci_low == pair.ci_high == 0.0


@pytest.mark.parametrize("shift, mark", [(0.05, "▲"), (-0.05, "▼")])
def test_a_constant_shift_is_significant_with_its_sign(runs, shift, mark, tmp_path):
    base = load_result(runs["consensus"])
    shifted = _variant(base, "shifted", shift)
    an = analyse(combine([("base", base), ("shifted", shifted)]))
    for cell in an.cells:
        (pair,) = cell.pairs
        assert pair.a == ("shifted" if shift > 0 else "consensus")
        assert pair.mean_diff == pytest.approx(abs(shift))
        # 6 listeners all moving the same way: the exact two-sided Wilcoxon p is 2/2^6
        assert pair.p_value == pytest.approx(2 / 64) and pair.p_holm == pytest.approx(2 / 64)
        assert cell.methods["shifted"].vs_reference == mark
        assert cell.methods["shifted"].best == (shift > 0)
        assert cell.methods["consensus"].worse_than_best == (shift > 0)
    write_report(an, tmp_path)
    assert f" {mark}" in (tmp_path / "report.md").read_text()


# ----------------------------------------------------------------------- refusals


def test_refuses_incomparable_results(runs, tmp_path, cli):
    base = load_result(runs["consensus"])
    other = load_result(runs["label-prior"])

    def refused(changed: RunResult, *expected: str) -> None:
        path = save_result(changed, tmp_path / "changed.json")
        code, _, err = cli("compare", runs["consensus"], path, "--out", tmp_path / "out")
        line = _one_line_error(code, err)
        for text in expected:
            assert text in line, line
        assert not (tmp_path / "out").exists()

    refused(dataclasses.replace(other, task={**other.task, "hash": "0" * 16}), "task.hash differs", "toy")
    drop = other.episodes[0]
    refused(dataclasses.replace(other, episodes=[r for r in other.episodes if r.listener != drop.listener]),
            "listeners differ", f"listener {drop.listener}")
    refused(dataclasses.replace(other, episodes=other.episodes[1:]),
            "episodes differ", f"listener {drop.listener} episode {drop.episode}")
    refused(dataclasses.replace(base), "appears twice")  # the same run passed under two file names
    code, _, err = cli("compare", runs["consensus"], "--metric", "auc", "--out", tmp_path / "out")
    assert "unknown metric 'auc'" in _one_line_error(code, err)
    code, _, err = cli("compare", tmp_path / "nothing-here", "--out", tmp_path / "out")
    assert "no such result file" in _one_line_error(code, err)


def test_two_configs_of_one_method_are_labelled_apart(runs):
    base = load_result(runs["label-prior"])
    other = dataclasses.replace(base, method={**base.method, "config_hash": "abcdef" + "0" * 10})
    data = combine([("x", base), ("y", other)])
    assert set(data.methods) == {f"label-prior@{base.method['config_hash'][:6]}", "label-prior@abcdef"}


def test_other_metric_and_two_methods_only(runs, tmp_path, cli):
    code, stdout, err = cli("compare", runs["consensus"], runs["label-prior"], "--metric", "top1", "--out", tmp_path)
    assert code == 0, err
    assert "needs at least 3 ranked methods" in stdout
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["metric"] == "top1" and doc["overall"] is None
    r = load_result(runs["label-prior"])
    s = next(x for x in r.summary if x.metric == "top1")
    cell = next(c for c in doc["cells"] if (c["scenario"], c["shots"]) == (s.scenario, s.shots))
    assert next(m for m in cell["methods"] if m["label"] == "label-prior")["mean"] == pytest.approx(s.mean)


# ----------------------------------------------------------------------- roles, headroom, gains, blocks


def _with_roles(runs) -> tuple[list[tuple[str, RunResult]], dict[str, RunResult]]:
    """Three ranked methods, the oracle (0.95 everywhere) and a personal reference (0.30,
    below consensus) as references, and label-prior's numbers filed as label-support's
    other-listener control."""
    r = {m: load_result(runs[m]) for m in ("consensus", "label-prior", "label-support")}
    r["oracle"] = _constant(r["label-support"], "oracle", 0.95, reference=True)
    r["personal"] = _constant(r["label-support"], "personal", 0.30, reference=True)
    r["control"] = dataclasses.replace(r["label-prior"], method={**r["label-support"].method, "control": "other-listener"})
    return [(name, result) for name, result in r.items()], r


def test_references_and_controls_are_shown_apart_never_ranked_or_tested(runs, tmp_path):
    results, _ = _with_roles(runs)
    an = analyse(combine(results))
    control = "label-support (other-listener)"
    assert {m.label: m.role for m in an.data.methods.values()} == {
        "consensus": "ranked", "label-prior": "ranked", "label-support": "ranked", "oracle": "reference",
        "personal": "reference", control: "control"}
    for cell in an.cells:
        assert {x for p in cell.pairs for x in (p.a, p.b)} == {"consensus", "label-prior", "label-support"}
        assert len(cell.pairs) == 3 and cell.friedman.methods == ["consensus", "label-prior", "label-support"]
        for label in ("oracle", "personal", control):
            m = cell.methods[label]
            assert not m.best and m.marks == "" and m.headroom == {}
        assert cell.methods["oracle"].mean == pytest.approx(0.95)
    write_report(an, tmp_path)
    md = (tmp_path / "report.md").read_text()
    summary = md.split("## Summary — toy")[1].split("###")[0]
    assert "oracle" not in summary and "personal" not in summary and "other-listener" not in summary
    references = md.split("### Ceiling / references — toy")[1].split("###")[0]
    assert "| oracle | 0.950 [0.950, 0.950]" in references and "| personal | 0.300 [0.300, 0.300]" in references


def test_headroom_captured_is_computed_from_the_cell_means(runs, tmp_path):
    results, _ = _with_roles(runs)
    an = analyse(combine(results))
    for cell in an.cells:
        base = cell.methods["consensus"].mean
        assert base > 0.30  # so the personal "ceiling" leaves nothing to capture
        for label in ("label-prior", "label-support"):
            m = cell.methods[label]
            assert m.headroom == {"oracle": pytest.approx((m.mean - base) / (0.95 - base)), "personal": None}
        assert cell.methods["consensus"].headroom == {}
    write_report(an, tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    cell = doc["cells"][0]
    prior = next(m for m in cell["methods"] if m["label"] == "label-prior")
    assert prior["headroom"]["personal"] is None and prior["headroom"]["oracle"] == pytest.approx(
        an.cells[0].methods["label-prior"].headroom["oracle"])
    table = (tmp_path / "report.md").read_text().split("### Headroom captured — toy")[1].split("###")[0]
    row = next(line for line in table.splitlines() if line.startswith("| label-prior | oracle |"))
    assert row.split("|")[3].strip() == f"{100 * an.cells[0].methods['label-prior'].headroom['oracle']:.0f}%"
    assert "| label-prior | personal | — | — | — | — |" in table


def test_the_k_shot_ceiling_is_a_third_headroom_denominator_after_the_other_two(runs, tmp_path):
    """A ``bayes-oracle`` result (the K-shot ceiling) beside the others adds headroom against it,
    shown after the oracle and the personal reference, and is never ranked or tested."""
    results, r = _with_roles(runs)
    results.append(("bayes-oracle", _constant(r["label-support"], "bayes-oracle", 0.80, reference=True)))
    an = analyse(combine(results))
    for cell in an.cells:
        base, m = cell.methods["consensus"].mean, cell.methods["label-support"]
        assert list(m.headroom) == ["oracle", "personal", "bayes-oracle"]
        assert m.headroom["bayes-oracle"] == pytest.approx((m.mean - base) / (0.80 - base))
        assert cell.methods["bayes-oracle"].role == "reference" and "bayes-oracle" not in cell.friedman.methods
    write_report(an, tmp_path)
    table = (tmp_path / "report.md").read_text().split("### Headroom captured — toy")[1].split("###")[0]
    assert any(line.startswith("| label-support | bayes-oracle |") for line in table.splitlines())


def test_personalization_gain_is_own_minus_control_paired_over_listeners(runs, tmp_path):
    results, r = _with_roles(runs)
    an = analyse(combine(results))
    def per_listener(result: RunResult, scenario: str, k: int) -> np.ndarray:
        rows = sorted((x for x in result.listeners if (x.scenario, x.shots) == (scenario, k)), key=lambda x: x.listener)
        return np.array([x.macro_f1 for x in rows])

    for cell in an.cells:
        (gain,) = cell.gains
        own, other = per_listener(r["label-support"], *cell.key[1:]), per_listener(r["control"], *cell.key[1:])
        assert (gain.a, gain.b) == ("label-support", "label-support (other-listener)")
        assert gain.mean_diff == pytest.approx(np.mean(own - other))
        assert gain.p_value == pytest.approx(1.0 if np.allclose(own, other) else sps.wilcoxon(own, other).pvalue)
        assert gain.p_holm == pytest.approx(gain.p_value)  # the only gain of its cell
    write_report(an, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "### Personalization gain — toy" in md and "### Personalization gain — toy · unseen · K=5" in md
    assert len(json.loads((tmp_path / "report.json").read_text())["cells"][0]["gains"]) == 1


def test_a_control_without_its_own_method_has_no_gain(runs):
    results, _ = _with_roles(runs)
    an = analyse(combine([(n, x) for n, x in results if n != "label-support"]))
    assert all(cell.gains == [] for cell in an.cells)


def test_unknown_control_value_is_refused(runs, tmp_path, cli):
    bad = load_result(runs["label-prior"])
    bad.method["control"] = "someone-else"
    path = save_result(bad, tmp_path / "bad.json")
    code, _, err = cli("compare", runs["consensus"], path, "--out", tmp_path / "out")
    assert "method.control is 'someone-else'" in _one_line_error(code, err)


def test_friedman_across_tasks_scores_each_task_by_the_mean_over_its_cells(runs):
    main, second = runs["consensus"].parent, runs["consensus-b"].parent
    an = analyse(load_comparison([main, second]))
    ranked = ["consensus", "label-prior", "label-support"]
    assert an.overall.methods == ranked and an.overall.n_blocks == 2
    expected = np.array([[np.mean([c.methods[m].mean for c in an.cells if c.key[0] == task]) for m in ranked]
                         for task in ("toy", "toy-b")])
    assert an.overall_scores == pytest.approx(expected)
    assert an.overall.p_value == pytest.approx(sps.friedmanchisquare(*expected.T).pvalue)
    # a method missing from a task's cells leaves that task out rather than mixing cells in
    partial = analyse(load_comparison([main, runs["consensus-b"], runs["label-prior-b"]]))
    assert partial.overall is None and "2 tasks" in partial.overall_note


# ----------------------------------------------------------------------- the browser


def test_html_report_renders_in_headless_chromium(runs, tmp_path):
    import browser
    from PIL import Image

    out = tmp_path / "report"
    results, _ = _with_roles(runs)
    results += [(str(p), load_result(p)) for p in sorted(runs["consensus-b"].parent.iterdir())]
    write_report(analyse(combine(results)), out)
    check = browser.check_page(out / "report.html")
    assert check.errors == []
    # 8 cells' CD diagrams, 4 shots curves, the CD diagram across the 2 tasks
    assert len(check.images) == 13 and check.broken_images == []
    assert all(i["width"] > 100 and i["height"] > 100 for i in check.images)
    shot = browser.screenshot(out / "report.html", tmp_path / "report.png")
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.std() > 10, "screenshot is blank"
