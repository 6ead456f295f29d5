"""Bad input never costs a run or a result (issue 10).

One table: every case is a command a new user could type with a bad file, value or path. Each
must exit with code 2, print exactly one line on stderr (``error: ...``) that names the file,
line, key or value and what to do, raise no traceback (the in-process ``cli`` fixture would
let any other exception through and fail the test), and leave no file behind — no result, no
temporary or partial file, not even an empty output folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import TOY_TASK, load_toy

from perserbench.data import Corpus, register_corpus


@register_corpus("toy-nan")
def load_toy_nan(bad_row: int = 4) -> Corpus:
    """The toy corpus with one utterance whose features contain a NaN."""
    corpus = load_toy()
    feats = corpus.features["toy"].copy()
    feats[bad_row, 1, 2] = np.nan
    return Corpus("toy-nan", corpus.vocabulary, corpus.utterances, corpus.annotations, {"toy": feats})


def toy_task(tmp: Path, *edits: tuple[str, str], name: str = "toy.toml") -> Path:
    """The shared toy task with text replacements applied (each must match once)."""
    text = TOY_TASK
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp / name
    path.write_text(text)
    return path


MANIFEST_HEAD = "utterance_id,listener_id,labels,speaker,session,f0,f1\n"


def manifest_rows(n_utterances: int = 12, listeners: int = 3) -> list[str]:
    rows = []
    for u in range(n_utterances):
        for j in range(listeners):
            label = "abc"[(u + j) % 3]
            rows.append(f"u{u},L{j},{label},spk{u % 2},S{1 + u % 3},{u * 0.1:.1f},{u * 0.2:.1f}")
    return rows


def write_manifest(tmp: Path, rows: list[str], name: str = "m.csv") -> Path:
    path = tmp / name
    path.write_text(MANIFEST_HEAD + "\n".join(rows) + "\n")
    return path


@dataclass
class Case:
    """``setup(tmp)`` writes what the case needs and returns the command line; ``expect`` is a
    regex the one error line must match (after ``error: ``)."""

    id: str
    setup: Callable[[Path], list[str]]
    expect: str


def _run(tmp: Path, *extra: str, task: Path | None = None) -> list[str]:
    return ["run", "--method", "label-prior", "--task", str(task or toy_task(tmp)), "--out", str(tmp / "out"), *extra]


def _config(key_value: str, method: str = "consensus") -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "--method", method, "--task", str(toy_task(tmp)), "--out", str(tmp / "out"),
                        "--config", key_value]


def _bytes(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _dir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir()
    return path


def _file(tmp: Path, name: str = "a-file") -> Path:
    path = tmp / name
    path.write_text("not a directory\n")
    return path


CASES = [
    # ------------------------------------------------ silent wrong results (were exit 0)
    Case("config-epochs-negative", _config("epochs=-3"),
         r"method 'consensus': config epochs=-3 is out of range: choose a value >= 1 \(the default is 4\)"),
    Case("config-hidden-zero", _config("hidden=0"), r"config hidden=0 is out of range: choose a value >= 1"),
    Case("duplicate-label-rows", lambda tmp: [
        "data", "inspect", "manifest", "--root",
        str(write_manifest(tmp, ["u1,L1,a,s,S1,0.1,0.2", "u2,L1,b,s,S1,0.3,0.4", "u1,L1,b,s,S1,0.1,0.2"]))],
        r"m\.csv:4: listener 'L1' labels utterance 'u1' 'b' here but 'a' on line 2; keep one row per "
        r"\(utterance, listener\)"),
    Case("label-outside-task", lambda tmp: _run(tmp, "--root", str(write_manifest(
        tmp, [*manifest_rows(), "u0,L9,zzz,spk0,S1,0.0,0.0"])), task=toy_task(
        tmp, ('name = "toy"\nfeatures = "toy"', 'name = "manifest"\nfeatures = "manifest"'))),
        r"toy\.toml: corpus 'manifest': label 'zzz' \(1 annotations\) is not a task label \['a', 'b', 'c'\]; "
        r"add it to 'corpus\.labels', or give a 'corpus\.label_map'"),
    Case("class-never-occurs", lambda tmp: _run(tmp, task=toy_task(
        tmp, ('labels = ["a", "b", "c"]', 'labels = ["a", "b", "c", "d"]'))),
        r"toy\.toml: task label 'd' never occurs in corpus 'toy' .*; remove it from 'corpus\.labels' or map"),
    Case("friedman-numeric-block-ids", lambda tmp: [
        "stats", "friedman", str(_bytes(tmp, "s.csv", b"n,A,B,C\n1,0.5,0.6,0.7\n2,0.4,0.6,0.5\n3,0.6,0.7,0.8\n"))],
        r"s\.csv: the first column 'n' holds distinct whole numbers, like block ids; pass --label-column"),
    Case("friedman-repeated-header", lambda tmp: [
        "stats", "friedman", str(_bytes(tmp, "s.csv", b"task,A,B,A\nx,0.5,0.6,0.7\ny,0.4,0.6,0.5\n"))],
        r"s\.csv, line 1: column name 'A' appears more than once; give every method its own column"),
    Case("sweep-no-methods", lambda tmp: ["sweep", "--methods", "", "--tasks", str(toy_task(tmp)),
                                          "--out", str(tmp / "out")],
         r"--methods '' names nothing; give comma-separated names"),
    Case("sweep-only-commas", lambda tmp: ["sweep", "--methods", " , ", "--tasks", str(toy_task(tmp)),
                                           "--out", str(tmp / "out")],
         r"--methods ' , ' names nothing"),
    # ------------------------------------------------------- tracebacks (were exit 1)
    Case("config-dropout-above-one", _config("dropout=2"),
         r"config dropout=2\.0 is out of range: choose a value >= 0, < 1 \(the default is 0\.2\)"),
    Case("config-batch-size-zero", _config("batch_size=0"), r"config batch_size=0 is out of range: choose a value >= 1"),
    Case("config-lr-nan", _config("lr=nan"), r"config lr=nan is not a finite number: choose a value > 0"),
    Case("config-lr-inf", _config("lr=inf", "finetune"), r"method 'finetune': config lr=inf is not a finite number"),
    Case("config-bad-choice", _config("init=bogus", "maml"),
         r"method 'maml': config init='bogus' is not a valid choice: choose one of random, consensus"),
    Case("seed-negative", lambda tmp: _run(tmp, "--seed", "-5"), r"--seed -5: seeds must be non-negative integers"),
    Case("sweep-seed-negative", lambda tmp: ["sweep", "--methods", "label-prior", "--tasks", str(toy_task(tmp)),
                                             "--seed", "-1", "--out", str(tmp / "out")],
         r"--seed -1: seeds must be non-negative integers"),
    Case("task-listeners-seed-negative", lambda tmp: _run(tmp, task=toy_task(tmp, ("seed = 1", "seed = -1"))),
         r"toy\.toml: 'listeners\.seed' must be a non-negative integer, got -1"),
    Case("task-episodes-seed-negative", lambda tmp: _run(tmp, task=toy_task(tmp, ("seed = 7", "seed = -7"))),
         r"toy\.toml: 'episodes\.seed' must be a non-negative integer, got -7"),
    Case("corpus-option-seed-negative", lambda tmp: _run(tmp, task=toy_task(
        tmp, ('name = "toy"\nfeatures = "toy"', 'name = "synthetic"\nfeatures = "synthetic"\noptions = { seed = -1 }'))),
        r"toy\.toml: \[corpus\] options: option 'seed' must be an integer >= 0, got -1"),
    Case("cli-corpus-option-seed-negative", lambda tmp: ["data", "inspect", "synthetic", "--corpus-option", "seed=-1"],
         r"option 'seed' must be an integer >= 0, got -1"),
    Case("task-unknown-corpus-option", lambda tmp: _run(tmp, task=toy_task(
        tmp, ('features = "toy"', 'features = "toy"\noptions = { bogus = 1 }'))),
        r"toy\.toml: \[corpus\] options: corpus 'toy' has no option 'bogus'; its options: seed, n_listeners, "
        r"per_session, dim"),
    Case("cli-unknown-corpus-option", lambda tmp: _run(tmp, "--corpus-option", "bogus=1"),
         r"corpus 'toy' has no option 'bogus'; its options: seed, n_listeners, per_session, dim"),
    Case("root-for-a-corpus-without-files", lambda tmp: ["data", "inspect", "synthetic", "--root", str(tmp)],
         r"corpus 'synthetic' has no option 'root'; its options: seed, uniform"),
    Case("task-not-utf8", lambda tmp: _run(tmp, task=_bytes(
        tmp, "toy.toml", TOY_TASK.replace('version = "0.1"', 'version = "0.1"\ndescription = "caf\xe9"')
        .encode("latin-1"))),
        r"toy\.toml:4: not UTF-8 text \(byte 0xe9 at column 19\); save the task file as UTF-8"),
    Case("manifest-not-utf8", lambda tmp: ["data", "inspect", "manifest", "--root", str(_bytes(
        tmp, "m.csv", (MANIFEST_HEAD + "u1,L1,a,s,S1,0.1,0.2\nu2,J\xfcrgen,a,s,S1,0.1,0.2\n").encode("latin-1")))],
        r"m\.csv:3: not UTF-8 text \(byte 0xfc at column 5\); save the file as UTF-8"),
    Case("manifest-jsonl-not-utf8", lambda tmp: ["data", "inspect", "manifest", "--root", str(_bytes(
        tmp, "m.jsonl", b'{"utterance_id": "u1", "listener_id": "L\xff", "labels": "a", "f0": 1}\n'))],
        r"m\.jsonl:1: not UTF-8 text \(byte 0xff at column 41\); save the manifest as UTF-8"),
    Case("result-not-utf8", lambda tmp: ["compare", str(_bytes(tmp, "r.json", b'{"schema_version": "\xff"}')),
                                         "--out", str(tmp / "report")],
         r"r\.json:1: not UTF-8 text \(byte 0xff at column 21\); save the result file as UTF-8"),
    Case("stats-csv-not-utf8", lambda tmp: ["stats", "friedman", str(_bytes(tmp, "s.csv", b"n,A,B,C\nx\xe9,1,2,3\n"))],
         r"s\.csv:2: not UTF-8 text \(byte 0xe9 at column 2\)"),
    Case("task-is-a-directory", lambda tmp: _run(tmp, task=_dir(tmp, "tasks")),
         r"tasks: is a directory; pass a task name \(.*\) or the path of a \.toml task file"),
    Case("task-toml-is-a-directory", lambda tmp: _run(tmp, task=_dir(tmp, "x.toml")),
         r"x\.toml: is a directory; pass a task name"),
    Case("submit-a-directory", lambda tmp: ["leaderboard", "submit", str(_dir(tmp, "runs")),
                                            "--board", str(tmp / "board")],
         r"runs: is a directory; pass the result file itself"),
    Case("sweep-zero-workers", lambda tmp: ["sweep", "--methods", "label-prior", "--tasks", str(toy_task(tmp)),
                                            "--executor", "process", "--workers", "0", "--out", str(tmp / "out")],
         r"--workers 0: give at least 1 worker process"),
    # --------------------------------------- output locations, found before any work
    Case("out-is-a-file", lambda tmp: ["run", "--method", "label-prior", "--task", str(toy_task(tmp)),
                                       "--out", str(_file(tmp))],
         r"--out .*a-file is a file, not a directory; choose a directory for the output"),
    Case("out-under-a-file", lambda tmp: ["run", "--method", "label-prior", "--task", str(toy_task(tmp)),
                                          "--out", str(_file(tmp) / "sub" / "dir")],
         r"--out .*a-file/sub/dir lies under .*a-file, which is a file, not a directory"),
    Case("sweep-out-is-a-file", lambda tmp: ["sweep", "--methods", "label-prior", "--tasks", str(toy_task(tmp)),
                                             "--out", str(_file(tmp))],
         r"--out .*a-file is a file, not a directory"),
    Case("compare-out-is-a-file", lambda tmp: ["compare", str(tmp), "--out", str(_file(tmp))],
         r"--out .*a-file is a file, not a directory"),
    Case("compare-out-under-a-file", lambda tmp: ["compare", str(tmp), "--out", str(_file(tmp) / "report")],
         r"--out .*a-file/report lies under .*a-file, which is a file"),
    Case("bench-json-is-a-directory", lambda tmp: ["bench", "--json", str(_dir(tmp, "timings"))],
         r"--json .*timings is a directory; give the path of a file to write"),
    Case("bench-json-under-a-file", lambda tmp: ["bench", "--json", str(_file(tmp) / "t.json")],
         r"--json .*a-file/t\.json lies under .*a-file, which is a file"),
    # ------------------------------------------------------------------ damaged data
    Case("manifest-nan-feature", lambda tmp: ["data", "inspect", "manifest", "--root", str(write_manifest(
        tmp, ["u1,L1,a,s,S1,0.1,0.2", "u2,L1,b,s,S1,nan,0.4"]))],
        r"m\.csv:3: feature column f0 of utterance 'u2' is 'nan', not a finite number; fix or drop the row"),
    Case("manifest-inf-feature-repeated-row", lambda tmp: ["data", "inspect", "manifest", "--root", str(write_manifest(
        tmp, ["u1,L1,a,s,S1,0.1,inf", "u1,L2,b,s,S1,0.1,inf"]))],
        r"m\.csv:2: feature column f1 of utterance 'u1' is 'inf', not a finite number"),
    Case("corpus-features-nan", lambda tmp: _run(tmp, task=toy_task(
        tmp, ('name = "toy"\nfeatures = "toy"', 'name = "toy-nan"\nfeatures = "toy"'))),
        r"features 'toy' of utterance 'S1_004' contain NaN or inf \(1 utterance\(s\) affected\); fix the features"),
]


def _snapshot(tmp: Path) -> dict[str, int]:
    return {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case: Case, tmp_path: Path, cli) -> None:
    args = case.setup(tmp_path)
    before = _snapshot(tmp_path)
    code, _, err = cli(*args)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert re.search(case.expect, lines[0]), f"\n{lines[0]}\ndoes not match\n{case.expect}"
    assert _snapshot(tmp_path) == before  # no result, no partial file, no empty output folder


def _refusing_dir(tmp: Path) -> Path | None:
    """A directory in which creating a file fails: a read-only folder for an ordinary user; as
    root (which ignores permission bits) /sys, where even root cannot create files."""
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / ".probe").touch()
        except OSError:
            return candidate
        (candidate / ".probe").unlink()
    return None


@pytest.mark.parametrize("command", ["run", "sweep", "compare"])
def test_unwritable_out_is_refused_before_any_work(command: str, tmp_path: Path, cli) -> None:
    refusing = _refusing_dir(tmp_path)
    if refusing is None:  # nothing refuses root here: a path under a regular file refuses everyone
        refusing = tmp_path / "a-file"
        refusing.write_text("not a folder")
    out = refusing / "results"
    task = toy_task(tmp_path)
    args = {"run": ["run", "--method", "label-prior", "--task", task],
            "sweep": ["sweep", "--methods", "label-prior", "--tasks", task],
            "compare": ["compare", tmp_path]}[command]
    try:
        code, _, err = cli(*args, "--out", out)
    finally:
        (tmp_path / "read-only").chmod(0o755)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.fullmatch(rf"error: --out {re.escape(str(out))} is not writable \({re.escape(str(refusing))}: "
                        r"(permission denied|read-only file system)\); choose a directory you can write to",
                        err.strip()), err
    assert not out.exists()


# ------------------------------------------------------------------ beside the table
def test_every_numeric_builtin_config_field_declares_its_range_and_defaults_lie_in_it() -> None:
    import dataclasses

    from perserbench.registry import check_config, config_fields, get_method, method_names

    for name in method_names():
        if not get_method(name).__module__.startswith("perserbench.methods."):
            continue
        check_config(name, get_method(name).Config())
        for f in config_fields(name):
            if isinstance(f.default, (int, float, str)) and not isinstance(f.default, bool):
                assert f.valid, f"{name}.{f.name} declares no valid range"
    field = next(f for f in dataclasses.fields(get_method("consensus").Config) if f.name == "dropout")
    assert field.metadata["bounds"] == {"ge": 0, "lt": 1}


def test_an_edited_task_keeps_the_result_of_its_earlier_version(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    task = toy_task(tmp_path)
    code, _, err = cli("run", "--method", "label-prior", "--task", task, "--shots", "1", "--out", out)
    assert code == 0, err
    first = sorted(p.name for p in out.iterdir())
    toy_task(tmp_path, ("episodes = 3", "episodes = 2"))  # same name and version, other episodes
    code, _, err = cli("run", "--method", "label-prior", "--task", task, "--shots", "1", "--out", out)
    assert code == 0, err
    both = sorted(p.name for p in out.iterdir())
    assert len(first) == 1 and len(both) == 2 and first[0] in both
    assert len({re.search(r"__t([0-9a-f]{8})\.json$", n)[1] for n in both}) == 2


def test_corpus_option_is_the_one_spelling_and_option_a_hidden_alias(cli) -> None:
    code, out, err = cli("data", "inspect", "synthetic", "--corpus-option", "uniform=true", "--json")
    assert code == 0, err
    canonical = out
    code, out, err = cli("data", "inspect", "synthetic", "--option", "uniform=true", "--json")
    assert code == 0 and out == canonical, err
    for command in (["data", "inspect"], ["run"], ["features", "extract"]):
        code, out, _ = cli(*command, "--help")
        assert code == 0 and "--corpus-option" in out and "--option " not in out
