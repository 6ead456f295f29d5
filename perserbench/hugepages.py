"""Make forking a torch process cheap: back its anonymous memory with transparent huge pages.

The sealed runner forks one process per isolation unit from a fold worker (DESIGN §2), about
350 forks per run on ``synthetic``. ``fork`` copies the parent's page tables, so its cost grows
with the parent's anonymous memory, and a process that has imported torch (and the
``torch._dynamo`` every optimizer imports) holds about 300 MB of it in 4 KiB pages: about 11 ms
of CPU per fork on this project's machine, plus the same again to tear the copy down when the
unit exits. Collapsed into 2 MiB pages (``madvise(MADV_COLLAPSE)``, Linux 6.1+), the same
memory takes 512 times fewer page-table entries and a fork costs about 3 ms.

It is a hint about physical backing and nothing else: no byte of memory changes, so nothing a
method computes can. Where the call is unavailable (another OS, an older kernel, THP switched
off) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

MADV_COLLAPSE = 25  # include/uapi/asm-generic/mman-common.h
HUGE_PAGE = 1 << 21


def collapse_anonymous_memory() -> int:
    """Ask the kernel to back this process's writable anonymous mappings (the heap included)
    with huge pages; returns the bytes it accepted (0 where unsupported). Call it once a
    process has allocated what it will keep, right before it starts forking."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise.restype = ctypes.c_int
        with open("/proc/self/maps", encoding="ascii") as maps:
            regions = [line.split() for line in maps]
    except (OSError, AttributeError):
        return 0
    accepted = 0
    for fields in regions:
        anonymous = len(fields) < 6 or fields[5] == "[heap]"
        if not anonymous or "w" not in fields[1] or "p" not in fields[1]:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        start = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        end &= ~(HUGE_PAGE - 1)
        if end > start and madvise(start, end - start, MADV_COLLAPSE) == 0:
            accepted += end - start
    return accepted
