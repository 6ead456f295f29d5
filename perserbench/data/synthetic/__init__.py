"""The embedded default corpus: calibrated, IEMOCAP-like synthetic listener corpora.

Why synthetic: a benchmark must run on a fresh machine with no licensed data, and its
machinery must be checkable against a known truth. Here the truth is known: every listener
perceives through a personal model, so the ``oracle`` reference can predict with it and
reports can show the ceiling, and each generator's ``uniform`` control (all listeners
identical) is a sanity check in which personalization must give nothing.

Why several generators: a conclusion drawn on one hand-built listener model may only say that
a method fits that model's shape. Every generator shares the same world for a seed
(:mod:`.world`: utterances, latent states, features) and differs only in how listeners turn
an utterance into labels (:mod:`.perception` says what every listener model provides):

* ``styles`` (:mod:`.styles`, the default): four hand-built perception styles in score space.
* ``confusion`` (:mod:`.confusion`): Dawid–Skene; personal class-confusion matrices drawn
  from a few schools, a personal class bias and a personal multi-label rate.
* ``prior-shift`` (:mod:`.prior_shift`): listeners differ only in base rates and in their
  threshold for ticking extra classes.

Who rates what is a separate option (:mod:`.workload`): ``even`` or heavy-tailed ``zipf``.
Size is an option too (``listeners``, ``utterances``): the defaults (16, 2400) are the corpus
the board is built on; larger ones give the uniform controls the listeners an equivalence
test needs for power (``docs/generators.md``).
Calibration (Fleiss' kappa, oracle vs consensus, per generator) is measured and documented in
``docs/generators.md`` and checked in ``tests/test_synthetic.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from perserbench.data import register_corpus
from perserbench.data.corpus import Annotations, Corpus
from perserbench.data.loading import parse_bool, parse_int
from perserbench.data.synthetic.confusion import draw_confusion
from perserbench.data.synthetic.perception import ListenerModel, sample_labels
from perserbench.data.synthetic.prior_shift import draw_prior_shift
from perserbench.data.synthetic.styles import draw_styles
from perserbench.data.synthetic.workload import WORKLOADS, assign_raters, listener_activity
from perserbench.data.synthetic.world import LABELS, SPEAKERS, UTTERANCES, draw_world
from perserbench.errors import PerserbenchError

N_LISTENERS = 16  # the default

ListenerDraw = Callable[[np.random.Generator, np.ndarray, tuple[str, ...], bool], ListenerModel]
GENERATORS: dict[str, ListenerDraw] = {
    "styles": draw_styles,
    "confusion": draw_confusion,
    "prior-shift": draw_prior_shift,
}


@lru_cache(maxsize=8)
def generate(seed: int = 0, uniform: bool = False, generator: str = "styles", workload: str = "even",
             listeners: int = N_LISTENERS, utterances: int = UTTERANCES) -> Corpus:
    """The synthetic corpus for (seed, uniform, generator, workload, listeners, utterances).
    Cached: tasks and tests share one instance; treat it as read-only.

    One seeded stream fixes everything, drawn in this order: the world, the listeners, the
    raters, the labels. ``generator="styles"`` with ``workload="even"`` is the corpus the
    benchmark started with, value for value."""
    if generator not in GENERATORS:
        raise PerserbenchError(f"option 'generator' must be one of {', '.join(GENERATORS)}, got {generator!r}")
    if workload not in WORKLOADS:
        raise PerserbenchError(f"option 'workload' must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    if utterances % SPEAKERS or utterances <= 0:
        raise PerserbenchError(f"option 'utterances' must be a positive multiple of {SPEAKERS} "
                               f"(the synthetic speakers), got {utterances}")
    if listeners < 5:
        raise PerserbenchError(f"option 'listeners' must be at least 5 (each utterance has up to 5 raters), "
                               f"got {listeners}")
    rng = np.random.default_rng(seed)
    world = draw_world(rng, utterances)
    width = max(2, len(str(listeners)))
    names = tuple(f"E{j + 1:0{width}d}" for j in range(listeners))
    truth = GENERATORS[generator](rng, world.similarity, names, uniform)
    rows_u, rows_j = assign_raters(rng, len(world.utterances), listener_activity(rng, listeners, workload))
    labels = sample_labels(rng, truth, rows_u, rows_j)
    annotations = Annotations(rows_u, np.array([names[j] for j in rows_j], dtype=object), labels)
    metadata = {
        "seed": seed,
        "uniform": uniform,
        "generator": generator,
        "workload": workload,
        "listeners": listeners,
        "utterances": utterances,
        "groups": dict(zip(names, truth.groups)),
        "intended_emotion": world.emotion,
    }
    return Corpus("synthetic", LABELS, world.utterances, annotations, {"synthetic": world.features}, truth, metadata)


@register_corpus("synthetic")
def load_synthetic(seed: int | str = 0, uniform: bool | str = False, generator: str = "styles",
                   workload: str = "even", listeners: int | str = N_LISTENERS,
                   utterances: int | str = UTTERANCES) -> Corpus:
    """Loader entry point (task ``[corpus] options`` or ``--corpus-option``: ``seed``,
    ``uniform``, ``generator`` (styles, confusion, prior-shift), ``workload`` (even, zipf),
    ``listeners`` (default 16), ``utterances`` (default 2400, a multiple of 10); strings from
    the command line are accepted)."""
    return generate(parse_int(seed, "seed", minimum=0), parse_bool(uniform, "uniform"), str(generator),
                    str(workload), parse_int(listeners, "listeners", minimum=5),
                    parse_int(utterances, "utterances", minimum=SPEAKERS))


__all__ = ["GENERATORS", "LABELS", "N_LISTENERS", "WORKLOADS", "ListenerModel", "generate", "load_synthetic"]
