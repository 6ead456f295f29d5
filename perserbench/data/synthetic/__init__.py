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
test needs for power (``docs/generators.md``). So is the feature shape (``layers``, ``dim``;
default 3 × 768) and storage (``dtype``): ``float32`` (default) draws the features in memory;
``float16`` draws them in chunks and streams them into the feature cache, opened as a memory
map (:mod:`.storage`): the MSP-Podcast-sized task ``synthetic-msp-scale`` (150,000 × 25 × 1024)
is 7.7 GB on disk and never in memory.
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
from perserbench.data.synthetic.storage import feature_path, stored_features
from perserbench.data.synthetic.styles import draw_styles
from perserbench.data.synthetic.workload import WORKLOADS, assign_raters, listener_activity
from perserbench.data.synthetic.world import (
    DIM,
    LABELS,
    LAYERS,
    SPEAKERS,
    UTTERANCES,
    World,
    draw_world,
)
from perserbench.errors import PerserbenchError

N_LISTENERS = 16  # the default
DTYPES = ("float32", "float16")
MAX_IN_MEMORY_BYTES = 2 * 2**30  # a float32 draw larger than this must use dtype=float16 (streamed)

ListenerDraw = Callable[[np.random.Generator, np.ndarray, tuple[str, ...], bool], ListenerModel]
GENERATORS: dict[str, ListenerDraw] = {
    "styles": draw_styles,
    "confusion": draw_confusion,
    "prior-shift": draw_prior_shift,
}


@lru_cache(maxsize=4)
def shared_world(seed: int, utterances: int, layers: int, dim: int, chunked: bool) -> tuple[World, dict]:
    """The world of a corpus seed (:func:`draw_world`, the first draws of the seed's stream)
    and the stream's state after it. Every generator of one seed shares the world, so the twelve
    bundled synthetic tasks draw three worlds, not twelve (a draw is about 0.25 s of CPU, most of
    ``perserbench tasks``); the corpora then share its arrays, which are read-only so that no
    corpus can change another's."""
    rng = np.random.default_rng(seed)
    world = draw_world(rng, utterances, layers, dim, chunked=chunked)
    for array in (world.emotion, world.similarity, world.features):
        if array is not None:
            array.setflags(write=False)
    return world, rng.bit_generator.state


@lru_cache(maxsize=8)
def generate(seed: int = 0, uniform: bool = False, generator: str = "styles", workload: str = "even",
             listeners: int = N_LISTENERS, utterances: int = UTTERANCES, layers: int = LAYERS, dim: int = DIM,
             dtype: str = "float32") -> Corpus:
    """The synthetic corpus for (seed, uniform, generator, workload, listeners, utterances,
    layers, dim, dtype). Cached: tasks and tests share one instance; treat it as read-only.

    One seeded stream fixes everything, drawn in this order: the world, the listeners, the
    raters, the labels. ``generator="styles"`` with ``workload="even"`` is the corpus the
    benchmark started with, value for value. ``dtype="float16"`` draws the features in chunks
    into the feature cache: a different draw from the float32 corpus of the same options (its
    features and, since the stream moves on differently, its listeners and labels)."""
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
    if dtype not in DTYPES:
        raise PerserbenchError(f"option 'dtype' must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if layers < 1 or dim < 1:
        raise PerserbenchError(f"options 'layers' and 'dim' must be positive, got {layers} and {dim}")
    if dtype == "float32" and utterances * layers * dim * 4 > MAX_IN_MEMORY_BYTES:
        raise PerserbenchError(
            f"{utterances} × {layers} × {dim} float32 features are {utterances * layers * dim * 4 / 2**30:.1f} GiB "
            f"in memory (limit {MAX_IN_MEMORY_BYTES / 2**30:.0f} GiB); use dtype=float16, which streams them "
            "into the feature cache as a memory map")
    world, stream = shared_world(seed, utterances, layers, dim, chunked=dtype != "float32")
    rng = np.random.default_rng(seed)
    rng.bit_generator.state = stream  # where the world's draws left the corpus's stream
    if world.recipe is not None:
        features = stored_features(world.recipe, feature_path(seed, utterances, layers, dim, dtype), dtype)
    else:
        features = world.features
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
        "layers": layers,
        "dim": dim,
        "dtype": dtype,
        "groups": dict(zip(names, truth.groups)),
        "intended_emotion": world.emotion,
    }
    return Corpus("synthetic", LABELS, world.utterances, annotations, {"synthetic": features}, truth, metadata)


@register_corpus("synthetic")
def load_synthetic(seed: int | str = 0, uniform: bool | str = False, generator: str = "styles",
                   workload: str = "even", listeners: int | str = N_LISTENERS,
                   utterances: int | str = UTTERANCES, layers: int | str = LAYERS, dim: int | str = DIM,
                   dtype: str = "float32") -> Corpus:
    """Loader entry point (task ``[corpus] options`` or ``--corpus-option``: ``seed``,
    ``uniform``, ``generator`` (styles, confusion, prior-shift), ``workload`` (even, zipf),
    ``listeners`` (default 16), ``utterances`` (default 2400, a multiple of 10), ``layers``
    (default 3), ``dim`` (default 768), ``dtype`` (float32: in memory; float16: streamed into
    the feature cache, memory-mapped); strings from the command line are accepted)."""
    return generate(parse_int(seed, "seed", minimum=0), parse_bool(uniform, "uniform"), str(generator),
                    str(workload), parse_int(listeners, "listeners", minimum=5),
                    parse_int(utterances, "utterances", minimum=SPEAKERS), parse_int(layers, "layers", minimum=1),
                    parse_int(dim, "dim", minimum=1), str(dtype))


__all__ = ["DTYPES", "GENERATORS", "LABELS", "N_LISTENERS", "WORKLOADS", "ListenerModel", "generate", "load_synthetic"]
