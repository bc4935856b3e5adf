"""The pod's DHCPv6 identity: DUID and IAID derived from the same pod identity as the DHCPv4
client id (dhcp/identity.py), so a re-created pod (same namespace/name, network, ifname)
is the same client to the server and gets the same address back.

DUID-LL (RFC 8415 11.4: type 3, hardware type 1, a link-layer address) with the MAC that
``ipam.stableMac`` would give the pod: a DUID-LL need not be the interface's current MAC,
only stable, and this one is a locally administered address no NIC carries. The IAID is 4
bytes of a digest of the same identity (one IA_NA per pod interface).
"""

from __future__ import annotations

import hashlib

_DUID_LL = b"\x00\x03\x00\x01"  # DUID type 3 (LL), hardware type 1 (Ethernet)


def duid_ll(mac: str) -> bytes:
    """The DUID-LL of ``mac``: the pod's ``stable_mac_for`` (dhcp/identity.py), whose pod
    identity (and per-sandbox form) it thereby shares with the DHCPv4 client id."""
    return _DUID_LL + bytes.fromhex(mac.replace(":", ""))


def iaid_for(duid: bytes) -> int:
    """Stable per DUID, hence per pod identity and ifname."""
    return int.from_bytes(hashlib.sha256(b"iaid:" + duid).digest()[:4], "big")
