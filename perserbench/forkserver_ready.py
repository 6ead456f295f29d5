"""Imported last by the sealed runner's forkserver (:func:`perserbench.sealed.preload_modules`).

By then the forkserver holds everything a fold worker starts from (torch, ``torch._dynamo``, the
built-in methods): about 300 MB of anonymous memory that every fold worker, and every isolation
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

import gc

from perserbench.hugepages import collapse_anonymous_memory

gc.collect()
gc.freeze()
collapse_anonymous_memory()
