"""DHCPv4 client for pods: packet codec, RFC 2131 state machine, lease journal.

The agent's command handlers use ``LeaseManager`` (acquire / release / re-adopt on
start), ``LeaseState`` and the identity helpers; the rest is internal.
"""

from .clock import Clock, SystemClock
from .identity import client_id_for, stable_mac_for
from .lease import Lease, LeaseRequest, LeaseState
from .manager import ChangeHook, LeaseManager
from .session import Timing

# The states by their short names, as callers and tests compare them.
BOUND = LeaseState.BOUND
RENEWING = LeaseState.RENEWING
REBINDING = LeaseState.REBINDING
REBOOTING = LeaseState.REBOOTING
EXPIRED = LeaseState.EXPIRED

__all__ = [
    "BOUND",
    "EXPIRED",
    "REBINDING",
    "REBOOTING",
    "RENEWING",
    "ChangeHook",
    "Clock",
    "Lease",
    "LeaseManager",
    "LeaseRequest",
    "LeaseState",
    "SystemClock",
    "Timing",
    "client_id_for",
    "stable_mac_for",
]
