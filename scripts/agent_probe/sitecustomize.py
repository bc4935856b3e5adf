"""Probes for `make soak` and `make bench`, loaded by the agent's interpreter through
PYTHONPATH, so the agent's code stays untouched.

$CBD_PROFILE set: SIGUSR2 starts cProfile on the main (event-loop) thread; the next SIGUSR2
stops it and writes its stats to that file (pstats format), so start-up and warm-up
imports stay out of the figures.

On SIGUSR2 it appends one JSON line to $CBD_SOAK_PROBE: the gc generation counts and the
number of tracked objects, the 10 types with most live instances, and, when tracemalloc runs
(PYTHONTRACEMALLOC=1 in the agent's environment), the traced size and the top allocation
sites that grew since the first snapshot. A signal handler runs on the main thread between
bytecodes, i.e. between the agent's event-loop steps.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import signal
import sys
import time
import tracemalloc
from collections import Counter
from types import FrameType

_OUT = os.environ.get("CBD_SOAK_PROBE")
_PROFILE_OUT = os.environ.get("CBD_PROFILE")
_FIRST: list[tracemalloc.Snapshot] = []
_PROFILER = cProfile.Profile() if _PROFILE_OUT else None
_PROFILING: list[bool] = []


def _dump(signum: int, frame: FrameType | None) -> None:
    if _PROFILER is not None and _PROFILE_OUT:
        if not _PROFILING:
            _PROFILING.append(True)
            _PROFILER.enable()
        else:
            _PROFILER.disable()
            _PROFILING.clear()
            # whole or not at all: the reader waits for the file to appear
            _PROFILER.dump_stats(_PROFILE_OUT + ".part")
            os.replace(_PROFILE_OUT + ".part", _PROFILE_OUT)
    if not _OUT:
        return
    objects = gc.get_objects()
    kinds = Counter(type(o).__name__ for o in objects)
    row: dict[str, object] = {
        "t": time.time(),
        "gc_count": gc.get_count(),
        "gc_stats": [s.get("collections") for s in gc.get_stats()],
        "tracked": len(objects),
        "types": kinds.most_common(10),
        "modules": len(sys.modules),
        "allocated_blocks": sys.getallocatedblocks(),
    }
    del objects
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        current, peak = tracemalloc.get_traced_memory()
        row["traced"] = [current, peak]
        if not _FIRST:
            _FIRST.append(snap)
        else:
            diff = snap.compare_to(_FIRST[0], "lineno")[:8]
            row["grew"] = [
                [str(d.traceback[0]), d.size_diff, d.count_diff] for d in diff if d.size_diff
            ]
    with open(_OUT, "a") as fh:
        fh.write(json.dumps(row) + "\n")


if _OUT or _PROFILER is not None:
    signal.signal(signal.SIGUSR2, _dump)
