"""The report's files: ``report.md``, a self-contained ``report.html``, ``report.json`` (every
number, machine-readable) and ``figures/*.png``, each written atomically."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from collections.abc import Sequence
from pathlib import Path

from perserbench.report.analysis import Analysis
from perserbench.report.blocks import Block, Figure, Table, build_blocks
from perserbench.results import write_atomic, write_bytes_atomic
from perserbench.stats import FriedmanResult


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + str(payload), ""]
        elif kind == "p":
            out += [str(payload), ""]
        elif kind == "table":
            t: Table = payload  # type: ignore[assignment]
            out.append("| " + " | ".join(t.header) + " |")
            out.append("|" + "|".join(":---" if j < t.align_left else "---:" for j in range(len(t.header))) + "|")
            for r, row in enumerate(t.rows):
                cells = [f"**{v}**" if (r, j) in t.bold else v for j, v in enumerate(row)]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        elif kind == "figure":
            f: Figure = payload  # type: ignore[assignment]
            out += [f"![{f.caption}](figures/{f.name})", "", f"*{f.caption}*", ""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1b1f24;line-height:1.45}h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:1rem 0;font-variant-numeric:tabular-nums;display:block;overflow-x:auto;max-width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:.3rem .6rem;text-align:right;white-space:nowrap}
th{background:#eef1f4}.l{text-align:left}figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d8dee4}
figcaption{color:#57606a;font-size:.9rem}"""


def render_html(blocks: Sequence[Block]) -> str:
    """A self-contained page: figures are inlined as base64 PNG data URIs, no external files."""
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>perserbench comparison report</title>", f"<style>{_CSS}</style></head><body>"]
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(str(payload))}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(str(payload))}</p>")
        elif kind == "table":
            t: Table = payload  # type: ignore[assignment]
            head = "".join(f'<th class="l">{html.escape(h)}</th>' if j < t.align_left else f"<th>{html.escape(h)}</th>"
                           for j, h in enumerate(t.header))
            rows = []
            for r, row in enumerate(t.rows):
                tds = []
                for j, v in enumerate(row):
                    text = html.escape(v)
                    if (r, j) in t.bold:
                        text = f"<strong>{text}</strong>"
                    tds.append(f'<td class="l">{text}</td>' if j < t.align_left else f"<td>{text}</td>")
                rows.append("<tr>" + "".join(tds) + "</tr>")
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
        elif kind == "figure":
            f: Figure = payload  # type: ignore[assignment]
            uri = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(f.caption)}" src="{uri}">'
                       f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
    out += ["</body></html>", ""]
    return "\n".join(out)


def analysis_json(an: Analysis) -> str:
    """Machine-readable statistics of the report (report.json); undefined headroom is null."""
    def friedman_dict(res: FriedmanResult | None) -> dict | None:
        return None if res is None else res.to_dict()

    doc = {
        "metric": an.data.metric, "alpha": an.alpha, "files": an.data.files, "tasks": an.data.tasks,
        "seeds": {m.label: sorted(m.seeds) for m in an.data.methods.values()},
        "roles": {m.label: m.role for m in an.data.methods.values()},
        "cells": [{"task": c.key[0], "scenario": c.key[1], "shots": c.key[2],
                   "methods": [dataclasses.asdict(m) for m in c.methods.values()],
                   "pairs": [dataclasses.asdict(p) for p in c.pairs],
                   "gains": [dataclasses.asdict(p) for p in c.gains],
                   "friedman": friedman_dict(c.friedman)} for c in an.cells],
        "overall": friedman_dict(an.overall),
        "overall_blocks": [{"task": task, "cells": [[s, k] for _, s, k in keys]}
                           for task, keys in an.overall_blocks.items()],
        "no_harm": [{"task": c.key[0], "scenario": c.key[1], "shots": c.key[2], "method": m.label,
                     "verdict": m.no_harm.verdict, **dataclasses.asdict(m.no_harm)}
                    for c in an.cells for m in c.methods.values() if m.no_harm is not None]
                   + [{"task": task, "scenario": None, "shots": None, "method": label, "verdict": t.verdict,
                       **dataclasses.asdict(t)} for task, tests in an.no_harm.items()
                      for label, t in tests.items() if t is not None],
    }
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n"


def write_report(an: Analysis, out_dir: Path) -> list[Path]:
    """Render everything first, then write each file atomically (figures before the pages that
    reference them). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with plt.style.context("default"):
        blocks = build_blocks(an)
    texts = {"report.md": render_markdown(blocks), "report.html": render_html(blocks), "report.json": analysis_json(an)}
    out_dir = Path(out_dir)
    written = []
    for kind, payload in blocks:
        if kind == "figure":
            path = out_dir / "figures" / payload.name  # type: ignore[attr-defined]
            write_bytes_atomic(path, payload.png)  # type: ignore[attr-defined]
            written.append(path)
    for name, text in texts.items():
        write_atomic(out_dir / name, text)
        written.append(out_dir / name)
    return written
