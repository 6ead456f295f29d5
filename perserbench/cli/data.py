"""``perserbench data inspect``: look at a corpus before running tasks on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from perserbench.cli import app
from perserbench.cli.run import CorpusOption, corpus_options

console = Console()
data_app = typer.Typer(help="Inspect corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("inspect")
def inspect(
    corpus: Annotated[str, typer.Argument(help="Corpus name: synthetic, iemocap, msp-podcast, crema-d, manifest.")],
    root: Annotated[Path | None, typer.Option("--root", help="Corpus root directory (real corpora).")] = None,
    corpus_option: CorpusOption = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", hidden=True)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")] = False,
) -> None:
    """Utterances, speakers, sessions, listeners, labels per listener, label distribution,
    mean labels per annotation and Fleiss' kappa."""
    from perserbench.data import load_corpus
    from perserbench.data.inspect import corpus_summary

    summary = corpus_summary(load_corpus(corpus, **corpus_options(root, corpus_option, option)))
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    overview = Table(title=f"corpus {summary['corpus']}", show_header=False)
    apl = summary["annotations_per_listener"]
    kappa = summary["fleiss_kappa"]
    for key, value in (
        ("utterances", summary["utterances"]),
        ("speakers", summary["speakers"]),
        ("sessions", summary["sessions"]),
        ("listeners", summary["listeners"]),
        ("annotations", summary["annotations"]),
        ("annotations per listener (min / median / max)", f"{apl['min']} / {apl['median']:g} / {apl['max']}"),
        ("raters per utterance (mean)", f"{summary['raters_per_utterance']:.2f}"),
        ("labels per annotation (mean)", f"{summary['labels_per_annotation']:.3f}"),
        ("Fleiss' kappa (fractional multi-label votes)", "n/a" if kappa is None else f"{kappa:.3f}"),
        ("features", ", ".join(f"{k} {v}" for k, v in summary["features"].items()) or "from the feature cache"),
    ):
        overview.add_row(key, str(value))
    console.print(overview)
    labels = Table(title="label distribution (share of ticked labels)")
    labels.add_column("label")
    labels.add_column("share", justify="right")
    for name, share in summary["label_distribution"].items():
        labels.add_row(name, f"{share:.3f}")
    console.print(labels)
    per_listener = Table(title="labels per listener")
    per_listener.add_column("listener")
    per_listener.add_column("annotations", justify="right")
    for name, n in summary["labels_per_listener"].items():
        per_listener.add_row(name, str(n))
    console.print(per_listener)
