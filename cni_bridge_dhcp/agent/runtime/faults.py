"""Crash injection for crash-safety tests.

``CNI_BRIDGE_DHCP_FAULT`` holds one or more comma-separated points such as
``uplink:enslave`` or ``add:veth``. When code passes a named point that is listed, the
process SIGKILLs itself right there: no cleanup, no ``finally``, no atexit, exactly like an
OOM kill or power loss between two steps. Unset (production), it costs one dict lookup.
"""

from __future__ import annotations

import errno
import logging
import os
import signal

ENV = "CNI_BRIDGE_DHCP_FAULT"

log = logging.getLogger(__name__)


def maybe_crash(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    if point in (p.strip() for p in spec.split(",")):
        log.critical("fault injection: SIGKILL at %s", point)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


FAIL_ENV = "CNI_BRIDGE_DHCP_FAIL"


def maybe_fail(point: str) -> None:
    """Raise EMFILE at ``point`` when ``CNI_BRIDGE_DHCP_FAIL`` lists it (comma-separated).

    For tests of what a step that fails under fd exhaustion leaves behind; a real
    exhaustion cannot be aimed at one step.
    """
    spec = os.environ.get(FAIL_ENV)
    if spec and point in (p.strip() for p in spec.split(",")):
        log.critical("fault injection: EMFILE at %s", point)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
