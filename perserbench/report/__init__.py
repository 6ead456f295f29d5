"""``perserbench compare``: a statistical comparison report from result files.

Pipeline: result files → :func:`load_comparison` (:mod:`.load`: checks that they are
comparable, merges seeds) → :func:`analyse` (:mod:`.analysis`: all statistics, from
:mod:`perserbench.stats`) → :func:`build_blocks` (:mod:`.blocks`: the content) →
:func:`write_report` (:mod:`.pages`: Markdown + self-contained HTML + JSON + PNG figures,
atomic writes).

Conventions (docs/reading-the-report.md explains them to readers):

* The unit of analysis is the **test listener**. Each listener's score in a cell
  (task, scenario, K) is the mean over its episodes; tests pair methods over listeners, CIs
  resample listeners and then episodes.
* **Seeds**: a method run with several seeds (in one file or several) is averaged over seeds
  *within each listener-episode* first; the seeds are repeated measurements of the same
  episode, not extra episodes, so they narrow nothing they should not.
* A method is identified by its name; when one name appears with several configurations the
  label becomes ``name@<config hash>``; an other-listener control is labelled
  ``name (other-listener)``.
* **Roles** (:mod:`perserbench.roles`): references (ceilings) and other-listener controls are
  shown apart and never ranked, marked or tested against the ranked methods; a control is
  only compared with its own method (the personalization gain).
* Results are only compared on identical splits: within a task the task hash must agree, and
  within a cell every method must have exactly the same listeners and episodes. Anything else
  is refused with a :class:`PerserbenchError` naming the field.
* Per cell, the family for Holm's correction is all pairs of ranked methods in that cell; the
  marks of the summary table (▲/▼ against ``consensus``, † against the best) use those
  Holm-adjusted Wilcoxon p-values. Personalization gains form their own family per cell.
* Friedman/Nemenyi blocks are independent: listeners within a cell, tasks across cells.
"""

from perserbench.report.analysis import (
    ALPHA,
    Analysis,
    CellAnalysis,
    MethodCell,
    analyse,
    analyse_cell,
)
from perserbench.report.blocks import build_blocks
from perserbench.report.load import ComparisonData, MethodScores, combine, load_comparison
from perserbench.report.pages import analysis_json, render_html, render_markdown, write_report

__all__ = [
    "ALPHA", "Analysis", "CellAnalysis", "ComparisonData", "MethodCell", "MethodScores", "analyse", "analyse_cell",
    "analysis_json", "build_blocks", "combine", "load_comparison", "render_html", "render_markdown", "write_report",
]
