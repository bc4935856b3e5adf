"""DHCPv4 client for pods: packet codec, RFC 2131 state machine, lease journal.

The agent's plugin orchestration uses ``LeaseManager`` (acquire / release / re-adopt on
start) and the identity helpers; the rest is internal.
"""

from .client import Timing
from .clock import Clock, SystemClock
from .identity import client_id_for, stable_mac_for
from .lease import Lease, LeaseRequest
from .manager import BOUND, EXPIRED, REBINDING, REBOOTING, RENEWING, ChangeHook, LeaseManager

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
    "SystemClock",
    "Timing",
    "client_id_for",
    "stable_mac_for",
]
