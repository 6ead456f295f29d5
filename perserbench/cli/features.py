"""``perserbench features extract``, ``list`` and ``verify``: the feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from perserbench.cli import app
from perserbench.cli.run import CorpusOption, CorpusOptionAlias, corpus_options

if TYPE_CHECKING:
    from perserbench.features.cache import EntryInfo

console = Console()
err_console = Console(stderr=True)

features_app = typer.Typer(help="Extract upstream features into the cache; list and verify cached features.",
                           no_args_is_help=True)
app.add_typer(features_app, name="features")


@features_app.command("extract")
def extract_command(
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus name (iemocap, msp-podcast, crema-d, manifest).")],
    upstream: Annotated[str, typer.Option("--upstream", "-u", help="fbank, a Hugging Face hub id, or a local checkpoint directory.")],
    root: Annotated[Path | None, typer.Option("--root", help="Corpus root directory (the manifest file for `manifest`).")] = None,
    key: Annotated[str | None, typer.Option("--key", "--as", help="Feature key tasks refer to (default: the upstream's name, e.g. wavlm-base-plus).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Half precision on CUDA.")] = False,
    batch_seconds: Annotated[float, typer.Option("--batch-seconds", help="Padded audio seconds per batch (batch size x longest clip).")] = 32.0,
    revision: Annotated[str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit) of the upstream.")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Cache folder (default $PERSERBENCH_CACHE or ~/.cache/perserbench).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute everything even if the cache is up to date.")] = False,
    executor: Annotated[str, typer.Option("--executor", help="local (this process) or ray (shards over Ray tasks; GPU tasks with --device cuda).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address for --executor ray (default: a local cluster; 'auto': the one `ray start` began here).")] = None,
    shards: Annotated[int | None, typer.Option("--shards", help="Ray tasks to split the work into (default: 4 per cluster CPU, or GPU with --device cuda).")] = None,
    corpus_option: CorpusOption = None,
    option: CorpusOptionAlias = None,
) -> None:
    """Compute per-layer, mean-pooled upstream features of every utterance and cache them.

    Resumes an interrupted extraction; with nothing changed it runs no model at all. With
    --executor ray the same batches run as Ray tasks, each writing its own shard; the cached
    arrays are byte-identical to a local extraction's.
    """
    from perserbench.data import load_corpus
    from perserbench.features.cache import extract_features

    options = corpus_options(root, corpus_option, option)
    if cache_dir is not None:
        options["cache_dir"] = str(cache_dir)
    loaded = load_corpus(corpus, **options)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:.0f}/{task.total:.0f} s audio"), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True) as bar:
        job = bar.add_task(f"checking audio of {corpus}", total=0.0)
        state = {"rows": 0}

        def on_plan(seconds: float, rows: int) -> None:
            bar.update(job, total=max(seconds, 1e-9), description=f"{upstream} on {corpus} ({rows} clips)")

        def on_progress(seconds: float, rows: int) -> None:
            state["rows"] += rows
            bar.update(job, advance=seconds)

        report = extract_features(loaded, upstream, key, cache_dir=cache_dir, device=device, fp16=fp16,
                                  batch_seconds=batch_seconds, revision=revision, force=force,
                                  progress=on_progress, on_plan=on_plan, executor=executor, address=address,
                                  shards=shards)
    table = Table(title=f"features {report.key!r} of {corpus}", show_header=False)
    table.add_row("cache entry", str(report.entry))
    table.add_row("upstream", f"{report.upstream} (revision {report.revision})")
    table.add_row("utterances", str(report.n_utterances))
    if report.repaired:
        table.add_row("repaired", f"the entry was damaged ({report.repaired}); rebuilt")
    if report.up_to_date:
        table.add_row("status", "up to date: nothing to compute (0 forward passes)")
    else:
        table.add_row("extracted now", f"{report.extracted} ({report.forwards} batches)")
        table.add_row("reused / resumed", f"{report.reused} / {report.resumed}")
        speed = report.audio_seconds / report.wall_s if report.wall_s > 0 else float("nan")
        table.add_row("audio", f"{report.audio_seconds:.1f} s in {report.wall_s:.1f} s ({speed:.1f}x real time)")
    console.print(table)
    console.print(f"use it in a task with  features = \"{report.key}\"")


@features_app.command("list")
def list_command(
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Cache folder (default $PERSERBENCH_CACHE or ~/.cache/perserbench).")] = None,
) -> None:
    """List cached feature sets (and interrupted extractions)."""
    from perserbench.features.cache import cache_root, list_entries

    entries = list_entries(cache_dir)
    console.print(entry_table(f"feature cache {cache_root(cache_dir)}", entries))
    if not entries:
        console.print("no cached features yet: run `perserbench features extract --corpus C --root DIR --upstream U`")
    for e in entries:
        if e.damage:
            console.print(f"[red]damaged[/red] {e.path}: {e.damage}; repair: {e.repair_command}", soft_wrap=True)


@features_app.command("verify")
def verify_command(
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Cache folder (default $PERSERBENCH_CACHE or ~/.cache/perserbench).")] = None,
) -> None:
    """Check every cached entry's files against their recorded sizes and SHA-256 checksums.

    Exits with code 2 when an entry is damaged; `features extract` for that entry repairs it.
    """
    from perserbench.errors import PerserbenchError
    from perserbench.features.cache import cache_root, list_entries

    entries = [e for e in list_entries(cache_dir, checksums=True) if e.complete]
    console.print(entry_table(f"verified feature cache {cache_root(cache_dir)}", entries))
    damaged = [e for e in entries if e.damage]
    if damaged:
        first = damaged[0]
        raise PerserbenchError(f"{len(damaged)} of {len(entries)} cache entries damaged (first: {first.path}: "
                               f"{first.damage}); repair: {first.repair_command}")
    console.print(f"{len(entries)} cache entries verified: every file matches its size and checksum")


def entry_table(title: str, entries: list[EntryInfo]) -> Table:
    """One row per cache entry; damaged entries say so in the state column."""
    table = Table(title=title)
    for col in ("corpus", "key", "upstream", "rows", "layers x dim", "size", "state", "root"):
        table.add_column(col)
    for e in entries:
        state = "[red]damaged[/red]" if e.damage else "complete" if e.complete else "[yellow]interrupted[/yellow]"
        table.add_row(e.corpus, e.key, e.upstream, str(e.rows), f"{e.layers} x {e.dim}",
                      f"{e.bytes / 2**20:.1f} MiB", state, e.root)
    return table
