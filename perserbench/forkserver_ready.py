"""Imported last by the sealed runner's forkserver (:func:`perserbench.sealed.preload_modules`).

First it imports the modules that define the methods to run (a plugin's package, the module
of a method class passed to ``run``; :func:`perserbench.sealed.method_modules`), with the
runner's ``sys.path``, both read from :data:`~perserbench.sealed.PRELOAD_ENV`. A fold worker
unpickles its method by reference to that module, so without this every fold worker imported
it again: for a method defined in a test module (pytest, scipy) about 1 CPU-s per fold worker,
three to eight per run (a trivial method on a small task: 5.0 vs 1.9 CPU-s per run, measured).
Code only, as for perserbench itself: what a module's import leaves in memory is what a fresh
import in each fold worker would give, and it holds no task, corpus or ground truth. A module
that fails to import is left for the fold worker to import, where its error is reported.

By then the forkserver holds everything a fold worker starts from (torch, ``torch._dynamo``, the
methods): about 300 MB of anonymous memory that every fold worker, and every isolation
unit forked from a fold worker, inherits. Collapsing it into huge pages once, here
(:mod:`perserbench.hugepages`), halves the CPU cost of each of the ~350 unit forks of a run
(measured in a fold worker after a ``maml`` meta-fit: about 11 → 5.6 ms per fork) at a
one-off cost of about 0.5–1 s per forkserver. A fold worker keeps most of those huge pages
through its meta-fit; collapsing again there would cost about as much as it saves.

It also moves everything alive now into the garbage collector's permanent generation
(``gc.freeze``): a fold worker's own ``gc.collect()`` before its first unit then scans only what
it made itself, not the ~10^6 objects of torch and its modules (about 0.2 s per fold worker,
three to eight fold workers per run), and no collection in a fold worker or a unit ever writes
to (and so copies) the pages those objects live on.

Its import is its job, so nothing else imports it.
"""

import contextlib
import gc
import importlib
import json
import os
import sys

from perserbench.hugepages import collapse_anonymous_memory
from perserbench.sealed import PRELOAD_ENV

_request = json.loads(os.environ.pop(PRELOAD_ENV, "{}"))
if "sys_path" in _request:
    sys.path[:] = _request["sys_path"]
for _name in _request.get("modules", []):
    # incl. SystemExit and pytest's Skipped: the fold worker imports it again and reports the error
    with contextlib.suppress(BaseException):
        importlib.import_module(_name)

gc.collect()
gc.freeze()
collapse_anonymous_memory()
