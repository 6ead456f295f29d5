"""``perserbench run``, ``perserbench methods`` and ``perserbench tasks``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perserbench.cli import app
from perserbench.errors import PerserbenchError
from perserbench.results import RunResult

console = Console()
err_console = Console(stderr=True)


def parse_options(pairs: list[str] | None, what: str) -> dict[str, str]:
    """``key=value`` strings → dict, naming a malformed pair."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PerserbenchError(f"{what} {pair!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


def corpus_options(root: Path | None, options: list[str] | None, alias: list[str] | None = None) -> dict[str, object]:
    """Loader options from ``--root`` and ``--corpus-option`` (``alias``: the hidden ``--option``)."""
    parsed: dict[str, object] = dict(parse_options([*(options or []), *(alias or [])], "--corpus-option"))
    if root is not None:
        parsed["root"] = str(root)
    return parsed


# One spelling of the loader option everywhere; `--option` (what `data inspect` used to say)
# still works, hidden.
CorpusOption = Annotated[list[str] | None, typer.Option(
    "--corpus-option", help="Corpus loader option key=value; repeatable (e.g. uniform=true).")]
CorpusOptionAlias = Annotated[list[str] | None, typer.Option("--option", hidden=True)]


def check_seeds(seeds: list[int] | None) -> list[int]:
    """The seeds to run (default ``[0]``); numpy's generators take non-negative seeds only."""
    for seed in seeds or []:
        if seed < 0:
            raise PerserbenchError(f"--seed {seed}: seeds must be non-negative integers")
    return list(seeds) if seeds else [0]


def result_table(result: RunResult) -> Table:
    """Per (scenario, K): mean macro-F1 with 95% CI, micro-F1, top-1, listeners, episodes."""
    table = Table(title=f"{result.method_name} on {result.task_name} (task hash {result.task['hash']})",
                  pad_edge=False)
    # no_wrap: a CI such as "0.447 [0.398, 0.497]" must stay on one line in an 80-column
    # terminal: no column wraps, and pad_edge=False saves the two characters that 80 lacked.
    for col in ("scenario", "K", "macro-F1 [95% CI]", "micro-F1", "top-1", "listeners", "episodes"):
        wide = col.startswith("macro")
        table.add_column(col, justify="left" if col == "scenario" else "right", no_wrap=True,
                         min_width=20 if wide else None)
    by_cell: dict[tuple[str, int], dict[str, object]] = {}
    for rec in result.summary:
        by_cell.setdefault((rec.scenario, rec.shots), {})[rec.metric] = rec
    for (scenario, k), metrics in sorted(by_cell.items()):
        m = metrics["macro_f1"]
        table.add_row(scenario, str(k), f"{m.mean:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]",
                      f"{metrics['micro_f1'].mean:.3f}", f"{metrics['top1'].mean:.3f}",
                      str(m.n_listeners), str(m.n_episodes))
    return table


@app.command("run")
def run_command(
    method: Annotated[str, typer.Option("--method", "-m", help="Registered method name (see `perserbench methods`).")] = "consensus",
    task: Annotated[str, typer.Option("--task", "-t", help="Task name (built-in, or in a $PERSERBENCH_TASKS folder) or path to a task .toml.")] = "synthetic",
    shots: Annotated[list[int] | None, typer.Option("--shots", "-k", help="Shot count(s) K; repeat the option for several. Default: all of the task's.")] = None,
    scenario: Annotated[str, typer.Option("--scenario", help="seen, unseen or both.")] = "both",
    seeds: Annotated[list[int] | None, typer.Option("--seed", "--seeds", help="Method training seed(s); repeat for several.")] = None,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help="Method config override key=value; repeatable.")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Corpus root directory (real corpora).")] = None,
    corpus_option: CorpusOption = None,
    option: CorpusOptionAlias = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the result JSON.")] = Path("runs"),
    control: Annotated[str, typer.Option("--control", help="own (default) or other-listener: adapt on another "
                                         "test listener's support, score on this listener's query.")] = "own",
) -> None:
    """Run one method on one task and write its RunResult JSON."""
    from perserbench.api import evaluate
    from perserbench.outputs import check_output_dir
    from perserbench.plugins import describe
    from perserbench.runner import write_result

    if scenario not in ("seen", "unseen", "both"):
        raise PerserbenchError(f"unknown scenario {scenario!r}; choose seen, unseen or both")
    seed_list = check_seeds(seeds)
    overrides = parse_options(config, "--config")
    describe(method, overrides)  # an unknown method or a bad --config value fails before any work
    check_output_dir(out)  # an unwritable --out fails before any work, not after it
    result = evaluate(method, task, list(shots) if shots else None, scenario, seed_list, overrides,
                      corpus_options(root, corpus_option, option), progress=True, control=control)
    path = write_result(result, out)
    console.print(result_table(result))
    console.print(headroom_line(result, out))
    console.print(f"wrote {path}  ({result.wall_time_s:.1f} s)")


def headroom_line(result: RunResult, out: Path) -> str:
    """Headroom captured per (scenario, K), ``(method − consensus) / (ceiling − consensus)``,
    from the ``consensus`` and ceiling results (oracle, personal) of the same task, split and
    seeds found in ``out``; or how to get them. A gain means little without its ceiling."""
    from perserbench.results import load_result
    from perserbench.roles import BASELINE, CEILINGS, headroom

    def means(r: RunResult) -> dict[tuple[str, int], float]:
        return {(x.scenario, x.shots): x.mean for x in r.summary if x.metric == "macro_f1"}

    found: dict[str, dict[tuple[str, int], float]] = {}
    for candidate in sorted(Path(out).glob("*.json")):
        try:
            other = load_result(candidate)
        except PerserbenchError:
            continue
        if (other.task["hash"] == result.task["hash"] and other.seeds == result.seeds
                and other.method.get("control", "own") == "own"
                and other.method_name in (BASELINE, *CEILINGS)):
            found.setdefault(other.method_name, {}).update(means(other))
    ceilings = [c for c in CEILINGS if c in found]
    if result.is_reference or result.method_name == BASELINE or BASELINE not in found or not ceilings:
        return (f"[dim]headroom captured: run consensus and a ceiling (oracle on synthetic tasks, personal on any) "
                f"with --out {out} to see it[/dim]")
    parts = []
    for cell, score in sorted(means(result).items()):
        values = [headroom(score, found[BASELINE][cell], found[c][cell]) for c in ceilings
                  if cell in found[BASELINE] and cell in found[c]]
        shown = "/".join("n/a" if v is None else f"{v:+.0%}" for v in values)
        parts.append(f"{cell[0]} K={cell[1]} {shown}")
    return f"headroom captured (of {'/'.join(ceilings)} − consensus): " + ", ".join(parts)


@app.command("methods")
def methods_command() -> None:
    """List registered methods with their config fields and defaults."""
    from perserbench.registry import config_fields, get_method, method_names, method_source

    for name in method_names():
        cls = get_method(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        table = Table(title=f"[bold]{name}[/bold] — {doc}  [dim]({method_source(name)})[/dim]",
                      title_justify="left", show_edge=False)
        table.add_column("option")
        table.add_column("default", justify="right")
        table.add_column("valid")
        table.add_column("why")
        for f in config_fields(name):
            table.add_row(f.name, repr(f.default), f.valid, f.doc)
        console.print(table)


@app.command("tasks")
def tasks_command(
    root: Annotated[Path | None, typer.Option("--root", help="Resolve tasks of this corpus root too.")] = None,
    tasks: Annotated[list[Path] | None, typer.Option(
        "--tasks", metavar="DIR", help="A folder of your own task .toml files, listed besides the built-in tasks; repeatable. "
        "$PERSERBENCH_TASKS adds folders too.")] = None,
) -> None:
    """List the built-in tasks and your own (--tasks / $PERSERBENCH_TASKS) with listeners,
    folds, scenarios, shots and split hash."""
    from perserbench.data import loader_options
    from perserbench.episodes import split_hash
    from perserbench.tasks import load_task_spec, resolve_task, task_files, tasks_dir

    table = Table(title="tasks", box=None, pad_edge=False, padding=(0, 1), header_style="bold underline")
    table.add_column("task", no_wrap=True, min_width=17)
    table.add_column("corpus", no_wrap=True)
    table.add_column("tested/all", justify="right", no_wrap=True)
    table.add_column("folds", justify="right", no_wrap=True)
    table.add_column("scenarios", no_wrap=True)
    table.add_column("K", no_wrap=True)
    table.add_column("split hash", no_wrap=True, min_width=16)
    unresolved: list[str] = []
    files = task_files(tasks or [])
    for name, path in files.items():
        spec = load_task_spec(path)
        listeners, hash_ = "-", "-"
        if spec.purpose == "scale":  # resolving one generates gigabytes of features: only a run does that
            unresolved.append(f"{name}: a scale task (time and memory at corpus scale); `perserbench run` "
                              "resolves it")
            table.add_row(name, spec.corpus.name, listeners, str(spec.listeners.folds),
                          "+".join(spec.episodes.scenarios), ",".join(map(str, spec.episodes.shots)), hash_)
            continue
        try:
            takes_root = "root" in (loader_options(spec.corpus.name) or ("root",))
            resolved = resolve_task(spec, {"root": str(root)} if root and takes_root else None)
            tested = {x for f in resolved.folds for v in f.test.values() for x in v}
            listeners = f"{len(tested)}/{len(resolved.corpus.listeners)}"
            hash_ = split_hash(resolved)
        except PerserbenchError as exc:  # e.g. a real corpus whose files are not here
            unresolved.append(f"{name}: {exc}")
        corpus = f"{spec.corpus.name} (a draw of {spec.replicate_of})" if spec.replicate_of else spec.corpus.name
        table.add_row(name, corpus, listeners,
                      str(spec.listeners.folds), "+".join(spec.episodes.scenarios),
                      ",".join(map(str, spec.episodes.shots)), hash_)
    console.print(table)
    for folder in sorted({path.parent for path in files.values()} - {tasks_dir()}):
        names = ", ".join(name for name, path in files.items() if path.parent == folder)
        console.print(f"[dim]from {folder}: {names}[/dim]", soft_wrap=True)
    for line in unresolved:
        console.print(f"[dim]not resolved — {line}[/dim]", soft_wrap=True)


@app.command("sweep")
def sweep_command(
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated method names.")] = "consensus",
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated task names or paths.")] = "synthetic",
    shots: Annotated[list[int] | None, typer.Option("--shots", "-k", help="Shot counts (default: the task's).")] = None,
    scenario: Annotated[str, typer.Option("--scenario", help="seen, unseen or both.")] = "both",
    seeds: Annotated[list[int] | None, typer.Option("--seed", "--seeds", help="Seeds; repeat for several.")] = None,
    executor: Annotated[str, typer.Option("--executor", help="sequential, process or ray.")] = "sequential",
    workers: Annotated[int, typer.Option("--workers", help="Processes for --executor process.")] = 2,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address.")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Corpus root directory (real corpora).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for result JSON files.")] = Path("runs"),
) -> None:
    """Run a grid of methods × tasks × seeds; finished result files are skipped (resumable)."""
    from perserbench.executors import execute, is_done, plan
    from perserbench.outputs import check_output_dir

    if scenario not in ("seen", "unseen", "both"):
        raise PerserbenchError(f"unknown scenario {scenario!r}; choose seen, unseen or both")
    scenarios = ["seen", "unseen"] if scenario == "both" else [scenario]
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    for flag, raw, names in (("--methods", methods, method_list), ("--tasks", tasks, task_list)):
        if not names:
            raise PerserbenchError(f"{flag} {raw!r} names nothing; give comma-separated names, e.g. "
                                   f"{flag} {'consensus,finetune' if flag == '--methods' else 'synthetic'}")
    if workers < 1:
        raise PerserbenchError(f"--workers {workers}: give at least 1 worker process")
    seed_list = check_seeds(seeds)
    check_output_dir(out)
    jobs = plan(method_list, task_list, seed_list, shots, scenarios, out, corpus_options=corpus_options(root, None))
    todo = [j for j in jobs if not is_done(j)]
    console.print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} already finished, {len(todo)} to run")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        job_bar = bar.add_task("sweep", total=len(todo))
        execute(todo, executor, workers, address,
                on_done=lambda job, path: bar.update(job_bar, advance=1, description=job.label()))
    console.print(f"done: results in {out}")
