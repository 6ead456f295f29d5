"""Sealed evaluation: where a method's code runs, and what it can reach (DESIGN §2, issue 9).

A method is untrusted code. The protocol says the prediction for an episode is a function of
the meta-fitted state and *that episode's support alone*. A docstring cannot enforce that;
processes can. The runner never calls a method in its own process. Instead:

* **One fold worker per (seed, fold)**, forked from a multiprocessing *forkserver*. The
  forkserver is a fresh interpreter that has imported torch, perserbench and the modules that
  define the methods to run (:func:`method_modules`: code, never data, and never an installed
  plugin's, which its own fold workers import: :mod:`perserbench.plugins`) and nothing else,
  so the worker starts with no task, corpus, annotation table or ground truth anywhere in its
  memory (``gc.get_objects()`` or the call stack shows none). It receives the method (pickled
  with cloudpickle, so a class defined in a notebook works too) and the fold's
  :class:`~perserbench.episodes.MetaTrainSet`, and runs ``meta_fit``. State a method keeps in
  globals or class attributes therefore never crosses folds or seeds.
* **One unit process per isolation unit**, forked from the fold worker *after* ``meta_fit``.
  A unit holds at most one episode per test listener (one episode index of one (scenario, K)
  cell, over the fold's listeners), so adaptation stays batched across listeners
  (``adapt_many``) while no call ever shows two episodes of one listener. Each unit gets a
  socket of its own, whose other end the fold worker hands straight to the runner (an fd
  passed over the control socket), so the unit's supports and queries never enter the fold
  worker, and before any method code runs the unit closes its copy of the control socket, so
  a unit (or anything it leaves running) cannot read a later unit's data. It answers with
  query probabilities (and optional per-class thresholds) and exits; nothing it learned
  survives it. Everything a fold worker or a unit sends the runner is decoded by
  :mod:`perserbench.wire`, never unpickled: unpickling runs code, and these processes run the
  method's. A method that leaves Python threads running after ``meta_fit`` is refused: such
  a thread would live on in the fold worker beside every unit.
* **A private feature file per fold worker** when a corpus is memory-mapped (the scale task):
  a reference to the feature cache's file would reach every utterance, the held-out pool's
  included, so the fold's rows are first copied into a folder of this worker's own
  (:meth:`~perserbench.episodes.MetaTrainSet.sealed_copy`), removed when it stops.

What this does *not* close: code that goes around the API (reads corpus files from disk,
regenerates the synthetic corpus by calling perserbench, writes a memory to a file or to a
shared mapping that ``meta_fit`` opens and every unit inherits). Those
routes are checked after the fact: the runner's independence audit re-adapts a sample of
episodes alone in fresh units and refuses the run when a prediction changes, and the board
refuses results above the ceiling (:mod:`perserbench.leaderboard`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import os
import pickle
import pkgutil
import shutil
import signal
import socket
import sys
import tempfile
import traceback
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import forkserver, spawn
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from pathlib import Path
from typing import Any, Self

import cloudpickle
import numpy as np
import torch

from perserbench import wire
from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.errors import PerserbenchError
from perserbench.method import Method
from perserbench.plugins import PluginRecipe

_CONTEXT: multiprocessing.context.BaseContext | None = None
_EXTRA_PRELOAD: list[str] = []
PRELOAD_ENV = "PERSERBENCH_FORKSERVER_PRELOAD"  # set only while the forkserver starts (see _context)


class MethodError(PerserbenchError):
    """The method's own code failed or broke the contract (reported in one line, exit 2)."""


@dataclass(frozen=True)
class Prediction:
    """What a unit answers for one episode: query probabilities [Q, C] and optional
    per-class thresholds [C] (None = the metrics' default 0.5)."""

    proba: np.ndarray
    thresholds: np.ndarray | None


def preload_modules() -> list[str]:
    """What the forkserver imports once, so that no fold worker imports it again: this module
    (torch, numpy), every built-in method's module, and ``torch._dynamo``. The last is there
    for speed alone: every ``torch.optim`` optimizer imports it lazily on construction (its
    ``__init__`` is wrapped in ``torch._disable_dynamo``), about 900 modules (sympy, triton,
    torch.distributed, …) and 1.5 s of CPU that each fold worker paid again before any
    training step. Code only, never data: the workers still start with no task, corpus or
    ground truth in memory. Last, :mod:`perserbench.forkserver_ready` imports the modules that
    define the methods to run (:func:`method_modules`) and backs all of it with huge pages,
    which makes every later fork cheaper."""
    from perserbench import methods

    builtins = [f"perserbench.methods.{m.name}" for m in pkgutil.iter_modules(methods.__path__)
                if not m.name.startswith("_")]
    return ["perserbench.sealed", "torch._dynamo", *builtins, "perserbench.forkserver_ready"]


def preload(*modules: str) -> None:
    """Have the forkserver also import ``modules`` (names, as ``import`` takes them) when it
    starts. For a process that runs methods from several modules of its own (a sweep over your
    plugins, a test suite): a fold worker imports the module of the method it is sent unless
    the forkserver has, once per (seed, fold), which costs whatever that import costs (a test
    module that imports pytest and scipy: about 1 CPU-s per fold worker). No effect once the
    forkserver runs (the first sealed run of the process starts it)."""
    _EXTRA_PRELOAD.extend(m for m in modules if m not in _EXTRA_PRELOAD)


def method_modules(method: Method | PluginRecipe) -> list[str]:
    """The modules besides perserbench that the forkserver imports for ``method``'s run: the
    method's own, every method's registered in this process (a conftest's), and
    :func:`preload`'s. Never an installed plugin's: the forkserver serves every run of the
    process, and a plugin is imported only in its own fold workers (:mod:`perserbench.plugins`).
    A class defined in ``__main__`` travels by value instead (cloudpickle), and a module that
    is not importable by name (no ``__spec__``) is left to the worker."""
    from perserbench.registry import registered_modules

    own = [] if isinstance(method, PluginRecipe) else [type(method).__module__]
    derived = [*own, *registered_modules()]
    importable = [m for m in derived if m != "__main__" and getattr(sys.modules.get(m), "__spec__", None) is not None]
    return list(dict.fromkeys([*importable, *_EXTRA_PRELOAD]))


def _context(method: Method | PluginRecipe) -> multiprocessing.context.BaseContext:
    """The forkserver context, its server preloaded with what every worker needs
    (:func:`preload_modules`, so a worker starts in milliseconds) and with nothing the runner
    holds. The first call starts the server for ``method`` (:func:`method_modules`).

    The server gets this process's ``sys.path`` for those imports (a module found through a
    path added at run time, such as a test folder): Python 3.11's forkserver is handed it but
    never applies it, while the fold workers it forks do. Both travel in an environment
    variable that exists only while the server starts, and that
    :mod:`perserbench.forkserver_ready` removes from the server's environment."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(preload_modules())
        os.environ[PRELOAD_ENV] = json.dumps({"sys_path": [str(p) for p in sys.path], "modules": method_modules(method)})
        try:
            forkserver.ensure_running()
        finally:
            os.environ.pop(PRELOAD_ENV, None)
        _CONTEXT = ctx
    return _CONTEXT


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Start a process without multiprocessing's re-run of the ``__main__`` script in it.

    Before a forked-from-forkserver child runs its target, multiprocessing re-imports the
    parent's main script (``init_main_from_path``), so that functions defined there can be
    found by name. A fold worker needs nothing from it: its target lives in this module and
    the method arrives by cloudpickle, which ships classes defined in ``__main__`` by value.
    The re-run only costs: every fold worker of a run started from a script
    (``benchmarks/board_suite.py``, a user's ``evaluate`` script) re-executed that script's
    imports, about 0.9 CPU-s per fold worker against 0.03–0.14 s without (a trivial method on
    the toy task: 4.1 vs 1.2 CPU-s per run, measured). Modules run with ``-m`` were already
    exempt (multiprocessing skips a ``__main__`` module of a package)."""
    original = spawn.get_preparation_data

    def without_main(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = without_main
    try:
        yield
    finally:
        spawn.get_preparation_data = original


class SealedMethod:
    """A meta-fitted method living in its own fold worker; :meth:`predict` runs one isolation
    unit in a fresh process. Use as a context manager (the worker is stopped on exit).
    ``method`` is a method object (pickled to the worker) or, for an installed plugin, the
    :class:`~perserbench.plugins.PluginRecipe` the worker builds it from."""

    def __init__(self, method: Method | PluginRecipe, train: MetaTrainSet, torch_seed: int) -> None:
        self.name = method.name or type(method).__name__
        self._cleanup: weakref.finalize | None = None
        if train.features.file_backed:  # in-memory features pickle as the fold's rows alone already
            private = Path(tempfile.mkdtemp(prefix="perserbench-sealed-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, private, ignore_errors=True)
            train = train.sealed_copy(private)
        context = _context(method)
        parent, child = context.Pipe(duplex=True)
        self._conn: Connection = parent
        self._process = context.Process(target=_fold_worker, args=(child,), daemon=True,
                                        name=f"perserbench-{self.name}")
        with _without_main_module():
            self._process.start()
        child.close()
        self._conn.send_bytes(cloudpickle.dumps(method))
        self._conn.send_bytes(pickle.dumps((train, torch_seed), protocol=pickle.HIGHEST_PROTOCOL))
        self._ready = False

    def wait_ready(self) -> None:
        """Block until ``meta_fit`` has finished in the worker (it starts at construction, so
        several folds' workers meta-fit in parallel while the runner scores another)."""
        if not self._ready:
            self._expect("ready", "meta_fit")
            self._ready = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn.closed:
            return
        if self._process.is_alive():
            try:
                self._conn.send(("close",))
            except OSError:
                pass
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._conn.close()
        if self._cleanup is not None:
            self._cleanup()

    def _receive(self, conn: Connection, stage: str) -> wire.Message:
        """The next message from a method's process (the fold worker or a unit), decoded, never
        unpickled; an error it reports is raised. Bytes that are no message come back as a
        message of no kind, which the caller refuses as a protocol break."""
        try:
            message = wire.decode(conn.recv_bytes())
        except wire.ProtocolError:
            return wire.Message("", "", [])
        if message.kind == "error":
            raise MethodError(f"method {self.name!r} raised during {stage}: {_one_line(message.text)}")
        return message

    def _expect(self, kind: str, stage: str) -> None:
        try:
            message = self._receive(self._conn, stage)
        except (EOFError, OSError):
            code = self._process.exitcode
            raise MethodError(f"method {self.name!r}: its worker died during {stage} (exit code {code}); "
                              "run it alone to see its own error") from None
        if message.kind != kind or message.arrays:
            raise MethodError(f"method {self.name!r}: broke the worker protocol during {stage}")

    def predict(self, supports: list[LabelledItems], queries: list[Items], torch_seed: int,
                stage: str = "adapt") -> list[Prediction]:
        """Adapt on ``supports`` (one per listener) and predict each ``queries[i]`` with the
        i-th adapted predictor, in a process forked for this call alone."""
        return self.collect(self.submit(supports, queries, torch_seed, stage))

    def submit(self, supports: list[LabelledItems], queries: list[Items], torch_seed: int,
               stage: str = "adapt") -> PendingUnit:
        """Start a unit and return at once; :meth:`collect` waits for its answer. Several units
        in flight run in parallel (each is its own process), which hides the fork latency."""
        self.wait_ready()
        self._conn.send(("unit",))
        self._expect("unit", stage)
        try:
            unit = Connection(recv_handle(self._conn))
        except OSError as exc:
            raise MethodError(f"method {self.name!r}: its worker did not open a unit ({exc})") from None
        try:
            unit.send_bytes(pickle.dumps((torch_seed, *_pack(supports, queries)), protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            unit.close()
            raise MethodError(f"method {self.name!r}: its unit process died during {stage} before reading its "
                              "episodes") from None
        return PendingUnit(unit, [len(q) for q in queries], supports[0].y.shape[1], stage)

    def collect(self, pending: PendingUnit) -> list[Prediction]:
        stage = pending.stage
        try:
            message = self._receive(pending.conn, stage)
        except (EOFError, OSError):
            raise MethodError(f"method {self.name!r}: its unit process died during {stage} without an answer; "
                              "run it alone to see its own error") from None
        finally:
            pending.conn.close()
        probas, thresholds = message.arrays[0::2], message.arrays[1::2]
        if message.kind != "ok" or len(probas) != len(thresholds) or any(p is None for p in probas):
            raise MethodError(f"method {self.name!r}: broke the unit protocol during {stage}")
        if len(probas) != len(pending.query_sizes):
            raise MethodError(f"method {self.name!r} during {stage}: answered {len(probas)} episodes for "
                              f"{len(pending.query_sizes)}")
        return [_checked(self.name, stage, p, t, n, pending.n_classes)
                for p, t, n in zip(probas, thresholds, pending.query_sizes, strict=True)]


def _pack(supports: list[LabelledItems], queries: list[Items]) -> tuple[list[tuple[np.ndarray, np.ndarray]],
                                                                        list[np.ndarray]]:
    """A unit's episodes as plain arrays for the wire: a torch tensor pickles through its
    storage (a ``torch.save`` per tensor, several ms per unit on each side); an array is
    its raw bytes. The unit rebuilds the very same tensors (:func:`_unpack`)."""
    return [(s.x.numpy(), s.y.numpy()) for s in supports], [q.x.numpy() for q in queries]


def _unpack(supports: list[tuple[np.ndarray, np.ndarray]],
            queries: list[np.ndarray]) -> tuple[list[LabelledItems], list[Items]]:
    return ([LabelledItems(torch.from_numpy(x), torch.from_numpy(y)) for x, y in supports],
            [Items(torch.from_numpy(x)) for x in queries])


@dataclass
class PendingUnit:
    """A unit process that has its episodes and has not answered yet."""

    conn: Connection
    query_sizes: list[int]
    n_classes: int
    stage: str


def _checked(name: str, stage: str, proba: np.ndarray, thresholds: np.ndarray | None, n_query: int,
             n_classes: int) -> Prediction:
    if proba.shape != (n_query, n_classes):
        raise MethodError(f"method {name!r} during {stage}: predict_proba must return [n_query={n_query}, "
                          f"C={n_classes}] probabilities, got {list(proba.shape)}")
    if not np.isfinite(proba).all() or (proba.size and (proba.min() < 0.0 or proba.max() > 1.0)):
        raise MethodError(f"method {name!r} during {stage}: predict_proba returned values outside [0, 1] or "
                          "non-finite values; return probabilities (e.g. torch.sigmoid of logits)")
    if thresholds is not None and (thresholds.shape != (n_classes,) or not np.isfinite(thresholds).all()):
        raise MethodError(f"method {name!r} during {stage}: a predictor's thresholds must be {n_classes} finite "
                          f"numbers, one per class, got shape {list(thresholds.shape)}")
    return Prediction(proba, thresholds)


# --------------------------------------------------------------------------- worker side


def _fold_worker(conn: Connection) -> None:
    """Runs in the fold worker: meta-fit, then fork one unit process per request.

    Single-threaded torch: a process that has run an OpenMP parallel region cannot safely fork
    a child that runs one (GNU libgomp deadlocks), and the runner gets its parallelism from
    running several folds' workers at once instead. Units are reaped by the kernel
    (``SIGCHLD`` ignored): the runner learns everything from the unit's own socket."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        method = cloudpickle.loads(conn.recv_bytes())
        if isinstance(method, PluginRecipe):
            method = method.build()  # the plugin's import-time code runs here, never in the runner
        train, torch_seed = pickle.loads(conn.recv_bytes())
        torch.manual_seed(torch_seed)
        method.meta_fit(train)
        del train
        if len(sys._current_frames()) > 1:
            raise MethodError("meta_fit left threads running; a sealed worker runs no thread beside its units")
    except BaseException as exc:  # noqa: BLE001 - reported to the runner as one line
        conn.send_bytes(wire.encode("error", _describe(exc)))
        return
    conn.send_bytes(wire.encode("ready"))
    # Move everything alive now out of the collector's reach: a unit's garbage collections then
    # never touch (and so never copy-on-write) the fold worker's pages, which keeps forks cheap.
    gc.collect()
    gc.freeze()
    while True:
        try:
            command = conn.recv()
        except EOFError:
            return
        if command != ("unit",):
            return
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the unit process: its own socket only, then gone
            code = 0
            try:
                conn.close()
                ours.close()
                _run_unit(Connection(theirs.detach()), method)
            except BaseException:  # noqa: BLE001 - the unit already reported, or the runner sees EOF
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        conn.send_bytes(wire.encode("unit"))
        send_handle(conn, ours.fileno(), 0)  # the pid argument is used on Windows only
        ours.close()


def _thresholds(predictor: object) -> np.ndarray | None:
    """A predictor's per-class decision thresholds as float64, or None (decide at 0.5)."""
    thresholds = getattr(predictor, "thresholds", None)
    if thresholds is None:
        return None
    return torch.as_tensor(thresholds).detach().cpu().to(torch.float64).numpy().copy()  # a copy: not the predictor's


def _run_unit(unit: Connection, method: Method) -> None:
    try:
        torch_seed, raw_supports, raw_queries = pickle.loads(unit.recv_bytes())
        supports, queries = _unpack(raw_supports, raw_queries)
        torch.manual_seed(torch_seed)
        predictors = method.adapt_many(supports)
        if len(predictors) != len(supports):
            raise MethodError(f"adapt_many returned {len(predictors)} predictors for {len(supports)} supports")
        answer: list[np.ndarray | None] = []  # proba, thresholds of each episode in turn
        for predictor, query in zip(predictors, queries, strict=True):
            # Read before the query is shown: fixed by the support. (This is the clear message for
            # an honest mistake; this process is the method's own and could skip the check, so
            # what enforces the rule is the runner's audit, which shows a hidden half of the query.)
            thresholds = _thresholds(predictor)
            with torch.no_grad():
                proba = predictor.predict_proba(query)
            proba = torch.as_tensor(proba).detach().cpu().to(torch.float32).numpy()
            after = _thresholds(predictor)
            if (after is None) != (thresholds is None) or (after is not None and not np.array_equal(after, thresholds)):
                raise MethodError("a predictor's thresholds changed when it predicted the query; decision thresholds "
                                  "must be fixed by the support set (DESIGN §2): set them in adapt")
            answer += [proba, thresholds]
        message = wire.encode("ok", arrays=answer)
    except BaseException as exc:
        unit.send_bytes(wire.encode("error", _describe(exc)))
        raise
    unit.send_bytes(message)


def _one_line(text: str, limit: int = 500) -> str:
    """A method process's error text as the runner shows it: one line (the CLI's errors are
    one line) of at most ``limit`` characters, control characters removed (it is the
    method's text, and reaches the terminal)."""
    flat = "".join(ch if ch.isprintable() else " " for ch in " ".join(text.split()))
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
