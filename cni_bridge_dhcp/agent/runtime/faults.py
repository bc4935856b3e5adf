"""Fault injection for the crash-safety and fd-pressure tests.

``CNI_BRIDGE_DHCP_FAULT`` holds one or more comma-separated points such as
``uplink:enslave`` or ``add:veth``. When code passes a named point that is listed, the
process SIGKILLs itself right there: no cleanup, no ``finally``, no atexit, exactly like an
OOM kill or power loss between two steps. ``CNI_BRIDGE_DHCP_FAIL`` lists points where a step
raises EMFILE instead.

Both variables are read once, when this module is imported (at process start, before the
agent serves anything): a hook point then costs one frozenset lookup, and changing the
environment of a running agent changes nothing. ``announce`` logs a loud warning at agent
start when either is set, because an armed agent kills itself on its next ADD.
"""

from __future__ import annotations

import errno
import logging
import os
import signal

ENV = "CNI_BRIDGE_DHCP_FAULT"
FAIL_ENV = "CNI_BRIDGE_DHCP_FAIL"

log = logging.getLogger(__name__)


def parse_points(spec: str | None) -> frozenset[str]:
    """The points named in a comma-separated ``spec`` (blanks ignored)."""
    return frozenset(p.strip() for p in (spec or "").split(",") if p.strip())


CRASH_AT: frozenset[str] = parse_points(os.environ.get(ENV))
FAIL_AT: frozenset[str] = parse_points(os.environ.get(FAIL_ENV))


def announce() -> None:
    """Warn, once the agent's logging is set up, that fault injection is armed."""
    if CRASH_AT:
        log.warning(
            "FAULT INJECTION ARMED (%s): this process SIGKILLs itself at %s; test use only",
            ENV,
            ", ".join(sorted(CRASH_AT)),
        )
    if FAIL_AT:
        log.warning(
            "FAULT INJECTION ARMED (%s): EMFILE is raised at %s; test use only",
            FAIL_ENV,
            ", ".join(sorted(FAIL_AT)),
        )


def maybe_crash(point: str) -> None:
    if point not in CRASH_AT:
        return
    log.critical("fault injection: SIGKILL at %s", point)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def maybe_fail(point: str) -> None:
    """Raise EMFILE at ``point`` when ``CNI_BRIDGE_DHCP_FAIL`` lists it.

    For tests of what a step that fails under fd exhaustion leaves behind; a real
    exhaustion cannot be aimed at one step.
    """
    if point in FAIL_AT:
        log.critical("fault injection: EMFILE at %s", point)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
