"""``perserbench bench``: speed of the batched meta-learning core vs the reference loop."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from perserbench.cli import app

console = Console()
err_console = Console(stderr=True)

CORE = "batched (dual)"  # the batched core as the methods run it
IMPLEMENTATIONS = ("loop", "vmap (functional_call)", "vmap (dual)", CORE, "higher", "torchopt", "torchopt (functional)",
                   "learn2learn")
BASELINES = ("loop", "higher", "torchopt", "torchopt (functional)", "learn2learn")  # what the core's speed-up targets are measured against
# The targets: how many times faster the batched core must be than each baseline.
TARGETS = {"meta-train, second order": 5.0, "adapt": 10.0}


def _target(workload: str) -> float | None:
    for prefix, value in TARGETS.items():
        if workload.startswith(prefix):
            return value
    return None


def speedups(report: object) -> dict[str, dict[str, float]]:
    """Per workload, how many times faster the batched core is than each other implementation
    (rates measured in the same run)."""
    from perserbench.bench import BenchReport

    assert isinstance(report, BenchReport)
    out: dict[str, dict[str, float]] = {}
    for w in dict.fromkeys(t.workload for t in report.timings):
        core = report.rate(w, CORE)
        out[w] = {t.implementation: core / t.rate for t in report.timings
                  if core and t.workload == w and t.implementation != CORE}
    return out


def bench_table(report: object) -> Table:
    """One row per (workload, implementation): rate, ratio to the loop, how many times faster
    the batched core is, and the issue's target for that speed-up where there is one."""
    import torch

    from perserbench.bench import BenchReport

    assert isinstance(report, BenchReport)
    s = report.settings
    table = Table(title=f"perserbench bench: meta-batch {s.meta_batch}, {s.inner_steps} inner steps, "
                        f"{s.layers}x{s.dim}-d features, {s.listeners} test listeners (K={s.shots}), "
                        f"{torch.get_num_threads()} torch threads")
    for col, justify in (("workload", "left"), ("implementation", "left"), ("per second", "right"),
                         ("x loop", "right"), ("core speed-up", "right"), ("target", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    ups = speedups(report)
    for w in dict.fromkeys(t.workload for t in report.timings):
        unit = "adaptations/s" if w.startswith("adapt") else "outer steps/s"
        label = f"{w}\n[dim]{unit}[/dim]"
        loop = report.rate(w, "loop")
        first = True
        for impl in IMPLEMENTATIONS:
            rate = report.rate(w, impl)
            if rate is None:
                if impl in report.skipped and impl in BASELINES and _target(w) is not None:
                    table.add_row(label if first else "", impl, "skipped", "", "", "")
                    first = False
                continue
            ratio = rate / loop if loop else None
            up = ups[w].get(impl)
            target = _target(w) if impl in BASELINES else None
            verdict = "" if target is None or up is None else (
                f">= {target:g}x [green]met[/green]" if up >= target else f">= {target:g}x [red]missed[/red]")
            table.add_row(label if first else "", impl, f"{rate:,.1f}", f"{ratio:.1f}x" if ratio is not None else "-",
                          f"{up:.1f}x" if up is not None else "", verdict)
            first = False
        table.add_section()
    return table


@app.command("bench")
def bench_command(
    meta_batch: Annotated[int, typer.Option(help="Listeners per meta-training outer step.")] = 8,
    inner_steps: Annotated[int, typer.Option(help="Inner-loop steps (meta-training and adaptation).")] = 5,
    dim: Annotated[int, typer.Option(help="Feature dimension.")] = 768,
    layers: Annotated[int, typer.Option(help="Upstream layers per item (13 = base-size SSL model).")] = 13,
    listeners: Annotated[int, typer.Option(help="Test listeners adapted at once.")] = 100,
    shots: Annotated[int, typer.Option(help="Support items per test listener.")] = 10,
    support: Annotated[int, typer.Option(help="Support items per meta-training episode.")] = 10,
    query: Annotated[int, typer.Option(help="Query items per meta-training episode.")] = 10,
    repeats: Annotated[int, typer.Option(help="Timed repetitions per cell (median is reported).")] = 7,
    threads: Annotated[int, typer.Option(help="torch intra-op threads for every column (0 = torch's default, "
                                              "one per core); the table title shows the count used.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the timings as JSON here.")] = None,
) -> None:
    """Meta-training outer steps/s and test-listener adaptations/s: the batched core vs the
    per-listener reference loop and the libraries people use (higher, torchopt, learn2learn;
    each when installed), all on the same mathematics, ratios from one run."""
    from perserbench.bench import BenchSettings, run_bench
    from perserbench.errors import PerserbenchError

    for name, value in (("meta-batch", meta_batch), ("listeners", listeners), ("shots", shots),
                        ("support", support), ("query", query), ("repeats", repeats), ("dim", dim),
                        ("layers", layers)):
        if value < 1:
            raise PerserbenchError(f"--{name} must be at least 1 (got {value})")
    if threads < 0:
        raise PerserbenchError(f"--threads must be at least 0 (got {threads})")
    if inner_steps < 0:
        raise PerserbenchError(f"--inner-steps must be at least 0 (got {inner_steps})")
    if json_out is not None:
        from perserbench.outputs import check_output_file

        check_output_file(json_out, "--json")  # before minutes of timing, not after
    settings = BenchSettings(meta_batch=meta_batch, inner_steps=inner_steps, dim=dim, layers=layers,
                             listeners=listeners, shots=shots, support=support, query=query, repeats=repeats)
    if threads:
        import torch

        torch.set_num_threads(threads)
    with err_console.status("timing…") as status:
        report = run_bench(settings, progress=lambda text: status.update(f"timing {text}"))
    console.print(bench_table(report))
    for impl, why in report.skipped.items():
        console.print(f"[yellow]{impl} skipped:[/yellow] {escape(why)}")
    if json_out is not None:
        import platform

        import torch

        payload = {"settings": asdict(settings), "skipped": report.skipped,
                   "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "torch": torch.__version__, "python": platform.python_version(),
                               "processor": platform.processor() or platform.machine()},
                   "timings": [{**asdict(t), "rate": t.rate} for t in report.timings],
                   "core_speedup": speedups(report)}
        from perserbench.results import write_atomic

        write_atomic(json_out, json.dumps(payload, indent=2))
        console.print(f"wrote {json_out}")
