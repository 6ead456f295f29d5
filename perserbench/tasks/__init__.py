"""Tasks as data (DESIGN §2, "Task spec"): TOML files → validated specs → resolved splits
with a content hash.

The built-in specs are package data beside this module (they travel in the wheel); users add
folders of their own (``--tasks DIR`` or ``$PERSERBENCH_TASKS``), searched besides the
built-ins. A task name is its file's stem and must be unique across all those folders.

A spec fixes everything that makes two papers' numbers comparable: corpus and label set,
feature key, listener folds, the utterance (held-out) split, scenarios, shot counts, query
size, number of episodes and the episode seed. :func:`resolve_task` turns it into concrete
listener folds, utterance pools and episodes, and hashes their *content*, so results are only
ever compared on identical splits.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perserbench.data import Corpus, load_corpus
from perserbench.data.loading import OptionError
from perserbench.errors import PerserbenchError
from perserbench.inputs import read_text

if TYPE_CHECKING:
    from perserbench.featurerows import FeatureArray

SCENARIOS = ("seen", "unseen")
SPLIT_FIELDS = ("session", "speaker")
# "development": defaults are tuned on it; it never appears on the board (DESIGN §2).
# "scale": measures time and memory at corpus scale (synthetic-msp-scale); never on the board.
PURPOSES = ("benchmark", "development", "scale")


TASKS_ENV = "PERSERBENCH_TASKS"


def tasks_dir() -> Path:
    """The folder of built-in task specs: package data next to this module, so an installed
    wheel finds them wherever it is run (not only inside a clone)."""
    return Path(__file__).resolve().parent


def user_task_dirs(extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """User task folders: ``extra`` (``--tasks DIR``) then ``$PERSERBENCH_TASKS`` (several
    folders separated by ``os.pathsep``, like ``PATH``). They are searched *besides* the
    built-in folder, never instead of it, so a user task never hides the board's tasks."""
    env = [p for p in os.environ.get(TASKS_ENV, "").split(os.pathsep) if p]
    dirs = [(Path(p), "--tasks") for p in extra] + [(Path(p), f"${TASKS_ENV}") for p in env]
    for path, origin in dirs:
        if not path.is_dir():
            raise PerserbenchError(f"task folder {path} (from {origin}) is not a directory")
    return tuple(dict.fromkeys(path.resolve() for path, _ in dirs if path.resolve() != tasks_dir()))


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    labels: tuple[str, ...]
    features: str
    label_map: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ListenerSpec:
    folds: int
    seed: int = 0


@dataclass(frozen=True)
class UtteranceSpec:
    split: str
    heldout: tuple[str, ...]


@dataclass(frozen=True)
class EpisodeSpec:
    shots: tuple[int, ...]
    scenarios: tuple[str, ...] = SCENARIOS
    query: int = 20
    min_query: int = 10
    episodes: int = 10
    seed: int = 0


@dataclass(frozen=True)
class ConsensusSpec:
    threshold: float = 0.5


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: str
    corpus: CorpusSpec
    listeners: ListenerSpec
    utterances: UtteranceSpec
    episodes: EpisodeSpec
    consensus: ConsensusSpec = ConsensusSpec()
    description: str = ""
    purpose: str = "benchmark"
    replicates: str = ""  # the board task this one is another corpus draw of (see :attr:`replicate_of`)
    source: str = "<memory>"

    @property
    def max_shots(self) -> int:
        return max(self.episodes.shots)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        data.pop("description")  # prose; must not change the hash
        data.pop("purpose")  # what the task is for, not what it is
        data.pop("replicates")  # how the board groups it, not what it is
        return data

    @property
    def replicate_of(self) -> str | None:
        """The board task this task is another *corpus draw* of, or None.

        Why replicates exist: a board task is one draw of a synthetic corpus (16 listeners),
        and a cell's gain over consensus or share of the headroom varies from draw to draw by
        more than many methods' effects (docs/generators.md, "How typical is the board's
        draw?"). A replicate keeps its task's whole protocol and changes only the corpus seed;
        the board pools the draws' listeners (independent people) into one table. Validation
        (:func:`check_replicate`) refuses a replicate that differs from its task in anything
        else, so a pooled number is never a mix of protocols."""
        return self.replicates or None

    @property
    def is_development(self) -> bool:
        """A development task (e.g. ``synthetic-dev``): where defaults are tuned, never ranked."""
        return self.purpose == "development"

    @property
    def ranked(self) -> bool:
        """Only benchmark tasks are ranked; development and scale tasks never reach the board."""
        return self.purpose == "benchmark"


def _build(cls: type, table: Any, where: str, source: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, naming unknown/missing/ill-typed keys."""
    if not isinstance(table, dict):
        raise PerserbenchError(f"{source}: [{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise PerserbenchError(
            f"{source}: unknown key '{where + '.' if where else ''}{unknown[0]}' "
            f"(known keys: {', '.join(sorted(fields))})"
        )
    missing = [
        n for n, f in fields.items()
        if n not in table and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise PerserbenchError(f"{source}: missing key '{where + '.' if where else ''}{missing[0]}'")
    kwargs = {}
    for name, value in table.items():
        expected = str(fields[name].type)
        key = f"{where + '.' if where else ''}{name}"
        if expected.startswith("tuple"):
            if not isinstance(value, list):
                raise PerserbenchError(f"{source}: '{key}' must be a list, got {value!r}")
            value = tuple(value)
        elif expected.startswith("dict") and not isinstance(value, dict):
            raise PerserbenchError(f"{source}: '{key}' must be a table, got {value!r}")
        elif expected == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise PerserbenchError(f"{source}: '{key}' must be an integer, got {value!r}")
        elif expected == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise PerserbenchError(f"{source}: '{key}' must be a number, got {value!r}")
        elif expected == "str" and not isinstance(value, str):
            raise PerserbenchError(f"{source}: '{key}' must be a string, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def parse_task(data: dict[str, Any], source: str = "<memory>") -> TaskSpec:
    """Validate a task table (as read from TOML) into a :class:`TaskSpec`."""
    sections = {"corpus": CorpusSpec, "listeners": ListenerSpec, "utterances": UtteranceSpec,
                "episodes": EpisodeSpec, "consensus": ConsensusSpec}
    top = {k: v for k, v in data.items() if k not in sections}
    spec_kwargs = {k: _build(cls, data[k], k, source) for k, cls in sections.items() if k in data}
    for name in ("corpus", "listeners", "utterances", "episodes"):
        if name not in spec_kwargs:
            raise PerserbenchError(f"{source}: missing table [{name}]")
    head = _build(_TopLevel, top, "", source)
    spec = TaskSpec(name=head.name, version=head.version, description=head.description, purpose=head.purpose,
                    replicates=head.replicates, source=source, **spec_kwargs)
    _check_values(spec)
    return spec


@dataclass(frozen=True)
class _TopLevel:
    name: str
    version: str
    description: str = ""
    purpose: str = "benchmark"
    replicates: str = ""


def _check_values(spec: TaskSpec) -> None:
    src, ep = spec.source, spec.episodes
    if spec.purpose not in PURPOSES:
        raise PerserbenchError(f"{src}: 'purpose' must be one of {', '.join(PURPOSES)}, got {spec.purpose!r}")
    if not spec.corpus.labels or len(set(spec.corpus.labels)) != len(spec.corpus.labels):
        raise PerserbenchError(f"{src}: 'corpus.labels' must be a non-empty list of distinct names")
    if spec.listeners.folds < 1:
        raise PerserbenchError(f"{src}: 'listeners.folds' must be >= 1, got {spec.listeners.folds}")
    for key, seed in (("listeners.seed", spec.listeners.seed), ("episodes.seed", ep.seed)):
        if seed < 0:  # numpy's generators take non-negative seeds only
            raise PerserbenchError(f"{src}: '{key}' must be a non-negative integer, got {seed}")
    if spec.utterances.split not in SPLIT_FIELDS:
        raise PerserbenchError(
            f"{src}: 'utterances.split' must be one of {', '.join(SPLIT_FIELDS)}, got {spec.utterances.split!r}"
        )
    bad = [s for s in ep.scenarios if s not in SCENARIOS]
    if bad or not ep.scenarios:
        raise PerserbenchError(f"{src}: 'episodes.scenarios' must be a subset of {list(SCENARIOS)}, got {list(ep.scenarios)}")
    if not ep.shots or any(not isinstance(k, int) or k < 1 for k in ep.shots):
        raise PerserbenchError(f"{src}: 'episodes.shots' must be positive integers, got {list(ep.shots)}")
    for key in ("query", "min_query", "episodes"):
        if getattr(ep, key) < 1:
            raise PerserbenchError(f"{src}: 'episodes.{key}' must be >= 1, got {getattr(ep, key)}")
    if ep.min_query > ep.query:
        raise PerserbenchError(f"{src}: 'episodes.min_query' ({ep.min_query}) exceeds 'episodes.query' ({ep.query})")
    if not 0.0 < spec.consensus.threshold <= 1.0:
        raise PerserbenchError(f"{src}: 'consensus.threshold' must be in (0, 1], got {spec.consensus.threshold}")


REPLICATE_KEY = "seed"  # the one corpus option a replicate changes


def check_replicate(spec: TaskSpec, parent: TaskSpec) -> None:
    """Refuse a replicate that is not its task's protocol on another corpus draw: everything
    but the name, the prose and the corpus seed must be equal, the seed must differ, and the
    task it names must not itself be a replicate (one level: the board pools a task with its
    draws)."""
    src = spec.source
    if parent.replicate_of:
        raise PerserbenchError(f"{src}: 'replicates' names {parent.name!r}, which is itself a replicate of "
                               f"{parent.replicate_of!r}; name the board task")
    if parent.purpose != "benchmark" or spec.purpose != "benchmark":
        raise PerserbenchError(f"{src}: a replicate and the task it replicates ({parent.name!r}) must both be "
                               "benchmark tasks (a development corpus is never pooled with the board's)")
    seeds = [s.corpus.options.get(REPLICATE_KEY) for s in (spec, parent)]
    if seeds[1] is None:  # left to the loader's default, which a replicate could repeat unnoticed
        raise PerserbenchError(f"{src}: the task it replicates, {parent.name!r}, must state its corpus option "
                               f"{REPLICATE_KEY!r}")
    if seeds[0] is None or seeds[0] == seeds[1]:
        raise PerserbenchError(f"{src}: a replicate must set corpus option {REPLICATE_KEY!r} to another value than "
                               f"{parent.name!r} ({seeds[1]!r}); it is another draw of that corpus")

    def protocol(s: TaskSpec) -> dict[str, Any]:
        data = s.as_dict()
        data.pop("name")
        data["corpus"]["options"] = {k: v for k, v in data["corpus"]["options"].items() if k != REPLICATE_KEY}
        return data

    mine, theirs = protocol(spec), protocol(parent)
    for key in mine:
        if mine[key] != theirs[key]:
            raise PerserbenchError(f"{src}: '{key}' differs from {parent.name!r}, which it replicates ({mine[key]!r} "
                                   f"here, {theirs[key]!r} there); a replicate changes only the corpus seed")


def _task_files(name: str, dirs: Sequence[Path]) -> list[Path]:
    return [d / f"{name}.toml" for d in dirs if (d / f"{name}.toml").is_file()]


def _unique(name: str, files: Sequence[Path]) -> Path:
    """The one file of task ``name``; two files of one name are an error naming both, because
    which one a result was run on would otherwise depend on the environment."""
    if len(files) > 1:
        raise PerserbenchError(
            f"task name {name!r} is defined twice: {files[0]} and {files[1]}; rename one of them "
            "(task names must be unique across the user task folders and the built-in tasks)"
        )
    return files[0]


def task_files(extra_dirs: Sequence[str | Path] = ()) -> dict[str, Path]:
    """Every task by name → its file: user folders (see :func:`user_task_dirs`), then the
    built-in tasks. A name defined twice is an error naming both files."""
    dirs = [*user_task_dirs(extra_dirs), tasks_dir()]
    names = sorted({p.stem for d in dirs for p in d.glob("*.toml")})
    return {name: _unique(name, _task_files(name, dirs)) for name in names}


def task_names(extra_dirs: Sequence[str | Path] = ()) -> list[str]:
    return list(task_files(extra_dirs))


def load_task_spec(name_or_path: str | Path, extra_dirs: Sequence[str | Path] = ()) -> TaskSpec:
    """A task by name (searched in the user task folders, then the built-in tasks) or any
    TOML file by path."""
    path = Path(name_or_path)
    if path.is_dir():
        raise PerserbenchError(f"{path}: is a directory; pass a task name ({', '.join(task_names())}) or "
                               "the path of a .toml task file")
    if path.suffix != ".toml":
        name = str(name_or_path)
        files = _task_files(name, [*user_task_dirs(extra_dirs), tasks_dir()])
        if not files:
            raise PerserbenchError(
                f"unknown task {name!r}; known tasks: {', '.join(task_names(extra_dirs))} "
                f"(or pass the path of a .toml task file, or add a task folder with ${TASKS_ENV})"
            )
        path = _unique(name, files)
    spec = _read_spec(path)
    if spec.replicate_of:
        # Searched like any task name, and beside the replicate's own file (a task folder passed
        # by path); a folder listed twice is searched once, so only a real clash is refused.
        dirs = dict.fromkeys(d.resolve() for d in (*user_task_dirs(extra_dirs), tasks_dir(), path.parent))
        files = _task_files(spec.replicate_of, list(dirs))
        if not files:
            raise PerserbenchError(f"{path}: 'replicates' names {spec.replicate_of!r}, which is not a known task")
        check_replicate(spec, _read_spec(_unique(spec.replicate_of, files)))
    return spec


def _read_spec(path: Path) -> TaskSpec:
    text = read_text(path, "task file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PerserbenchError(f"{path}: malformed TOML ({exc})") from None
    return parse_task(data, source=str(path))


@dataclass(frozen=True)
class ListenerFold:
    """One rotation of the listener split. ``test[scenario]`` are the fold's test listeners
    eligible in that scenario; ``train`` are all listeners outside the fold."""

    index: int
    train: tuple[str, ...]
    test: dict[str, tuple[str, ...]]


@dataclass
class ResolvedTask:
    """A task made concrete on a loaded corpus: features, pools, folds and eligibility.

    Episodes are drawn from this by :mod:`perserbench.episodes`; the content hash covers the
    spec, the annotations, the pools, the folds and every episode's support/query items.
    """

    spec: TaskSpec
    corpus: Corpus
    features: FeatureArray  # float32 or float16 [N, L, D], in memory or file-backed (read rows, never all)
    train_pool: np.ndarray  # bool [N]: utterance may be used for training
    folds: tuple[ListenerFold, ...]

    @property
    def heldout_pool(self) -> np.ndarray:
        return ~self.train_pool

    def scenario_pool(self, scenario: str) -> np.ndarray:
        return self.train_pool if scenario == "seen" else self.heldout_pool

    def listener_rows(self, listener: str, scenario: str) -> np.ndarray:
        """Annotation rows of ``listener`` on utterances of the scenario's pool."""
        ann = self.corpus.annotations
        mask = (ann.listener == listener) & self.scenario_pool(scenario)[ann.utterance]
        return np.flatnonzero(mask)


def resolve_task(spec: TaskSpec, corpus_options: dict[str, Any] | None = None) -> ResolvedTask:
    """Load the corpus, map its labels, and fix pools and listener folds."""
    options = {**spec.corpus.options, **(corpus_options or {})}
    try:
        loaded = load_corpus(spec.corpus.name, **options)
    except OptionError as exc:
        if exc.option in (corpus_options or {}):
            raise
        raise PerserbenchError(f"{spec.source}: [corpus] options: {exc}") from None
    try:
        corpus = loaded.project(spec.corpus.labels, spec.corpus.label_map)
    except PerserbenchError as exc:
        raise PerserbenchError(f"{spec.source}: {exc}") from None
    features = _features(corpus, spec.corpus.features)
    train_pool = _train_pool(spec, corpus)
    folds = _listener_folds(spec, corpus, train_pool)
    return ResolvedTask(spec, corpus, features, train_pool, folds)


def load_task(name_or_path: str | Path, corpus_options: dict[str, Any] | None = None) -> ResolvedTask:
    return resolve_task(load_task_spec(name_or_path), corpus_options)


def _features(corpus: Corpus, key: str) -> FeatureArray:
    fix = "fix the features"
    if key in corpus.features:
        feats = corpus.features[key]
        if not (isinstance(feats, np.ndarray) and feats.dtype in (np.float16, np.float32)):
            feats = np.asarray(feats, dtype=np.float32)  # a memory map of float16/32 stays a map
    else:
        from perserbench.features.cache import extract_command, load_cached_features

        feats = load_cached_features(corpus, key)  # float32, in memory or MappedFeatures
        fix = f"check the audio and extract again: {extract_command(corpus, key)} --force"
    if feats.ndim != 3 or feats.shape[0] != len(corpus.utterances):
        raise PerserbenchError(
            f"features {key!r} have shape {feats.shape}; expected [{len(corpus.utterances)}, layers, dim]"
        )
    finite = _finite_rows(feats)
    if not finite.all():
        # Caught here, not in the metrics after a whole training run.
        bad = np.flatnonzero(~finite)
        utt = corpus.utterances[int(bad[0])]
        where = f" (audio {utt.audio_path})" if utt.audio_path else ""
        raise PerserbenchError(
            f"features {key!r} of utterance {utt.id!r}{where} contain NaN or inf ({len(bad)} utterance(s) "
            f"affected); {fix}"
        )
    return feats


def _finite_rows(feats: FeatureArray) -> np.ndarray:
    """bool [N]: the row holds no NaN or inf. File-backed features are checked a batch at a
    time (:class:`~perserbench.featurerows.FeatureRows`, positioned reads), so the check never
    holds the whole array and leaves no file pages resident in this process."""
    if isinstance(feats, np.ndarray) and not isinstance(feats, np.memmap):
        return np.isfinite(feats).all(axis=(1, 2))
    from perserbench.featurerows import FeatureRows

    rows = FeatureRows(feats)
    return np.concatenate([np.isfinite(batch.numpy()).all(axis=(1, 2)) for _, batch in rows.batches()])


def _train_pool(spec: TaskSpec, corpus: Corpus) -> np.ndarray:
    field_name = spec.utterances.split
    values = np.array([getattr(u, field_name) for u in corpus.utterances], dtype=object)
    present = set(values.tolist())
    for v in spec.utterances.heldout:
        if v not in present:
            raise PerserbenchError(
                f"{spec.source}: 'utterances.heldout' value {v!r} is not a {field_name} of corpus "
                f"{corpus.name!r} (known: {', '.join(sorted(map(str, present))[:12])})"
            )
    pool = ~np.isin(values, list(spec.utterances.heldout))
    if pool.all() or not pool.any():
        raise PerserbenchError(f"{spec.source}: the held-out split leaves an empty training or held-out pool")
    return pool


def _listener_folds(spec: TaskSpec, corpus: Corpus, train_pool: np.ndarray) -> tuple[ListenerFold, ...]:
    """Rotate eligible listeners through ``folds`` test folds (DESIGN §2).

    Eligible in a scenario = at least ``max(shots) + min_query`` labels in its pool. Listeners
    eligible nowhere are never tested and always train.
    """
    ann = corpus.annotations
    need = spec.max_shots + spec.episodes.min_query
    listeners = corpus.listeners
    eligible: dict[str, set[str]] = {}
    for scenario in spec.episodes.scenarios:
        pool = train_pool if scenario == "seen" else ~train_pool
        in_pool = pool[ann.utterance]
        names, counts = np.unique(ann.listener[in_pool], return_counts=True)
        eligible[scenario] = {str(n) for n, c in zip(names, counts) if c >= need}
        if not eligible[scenario]:
            best = int(counts.max()) if len(counts) else 0
            raise PerserbenchError(
                f"task {spec.name!r}: no listener has >= {need} labels (max shots {spec.max_shots} + "
                f"min_query {spec.episodes.min_query}) in scenario {scenario!r}; the most any listener "
                f"has is {best}: lower 'episodes.shots' or 'episodes.min_query'"
            )
    testable = sorted(set().union(*eligible.values()))
    if spec.listeners.folds > len(testable):
        raise PerserbenchError(
            f"{spec.source}: 'listeners.folds' = {spec.listeners.folds} but only {len(testable)} "
            "listeners are eligible for testing; use fewer folds"
        )
    order = np.random.default_rng(spec.listeners.seed).permutation(len(testable))
    folds = []
    for i, members in enumerate(np.array_split(np.array(testable, dtype=object)[order], spec.listeners.folds)):
        members = set(members.tolist())
        test = {s: tuple(sorted(members & eligible[s])) for s in spec.episodes.scenarios}
        folds.append(ListenerFold(i, tuple(sorted(set(listeners) - members)), test))
    return tuple(folds)
