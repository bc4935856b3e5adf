"""A pod's DHCPv6 lease (one IA_NA address), its deadlines, and its journal record.

Deadlines are wall-clock seconds counted from when the exchange that bound it began
(RFC 8415 18.2.10.1), so they survive an agent restart. T1/T2 of 0 (the server leaves
them to the client) become 0.5 and 0.8 of the preferred lifetime (RFC 8415 21.4).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

from ....cni.defaults import LEASES6_DIR
from ...state.recordjournal import RecordJournal, number_field, typed_field
from .client import Bound6
from .codec import INFINITY

RECORD_VERSION = 1


class Lease6State(enum.StrEnum):
    BOUND = "BOUND"
    RENEWING = "RENEWING"
    REBINDING = "REBINDING"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Lease6Request:
    key: str
    netns_path: str
    netns_fd: int
    ifname: str
    duid: bytes
    iaid: int
    timeout: float
    meta: dict[str, str]


@dataclass(frozen=True)
class Lease6:
    key: str
    netns_path: str
    netns_inode: int
    ifname: str
    duid: bytes
    iaid: int
    server_id: bytes
    server: IPv6Address
    address: IPv6Interface  # the prefix length is the on-link prefix's when an RA covers it
    preferred: int
    valid: int
    t1: int
    t2: int
    bound_at: float
    renew_at: float
    rebind_at: float
    expires_at: float
    state: Lease6State
    dns_servers: tuple[IPv6Address, ...] = ()
    domains: tuple[str, ...] = ()
    meta: dict[str, str] | None = None

    def with_state(self, state: Lease6State) -> Lease6:
        return replace(self, state=state)

    def lifetimes_at(self, now: float) -> tuple[int, int]:
        """(preferred, valid) seconds left at ``now``, for the address on the interface."""
        if self.valid == INFINITY:
            return INFINITY, INFINITY
        valid = max(0, int(self.expires_at - now))
        preferred = min(valid, max(0, int(self.bound_at + self.preferred - now)))
        return preferred, valid


def bind6(
    bound: Bound6,
    *,
    key: str,
    netns_path: str,
    inode: int,
    ifname: str,
    duid: bytes,
    iaid: int,
    prefixlen: int,
    meta: dict[str, str] | None,
) -> Lease6:
    t1, t2 = bound.t1, bound.t2
    if t1 == 0 or t2 == 0 or t1 > t2:
        base = bound.preferred if bound.preferred != INFINITY else bound.valid
        t1, t2 = int(base * 0.5), int(base * 0.8)
    at = bound.sent_at
    far = 10 * 365 * 86400.0  # "infinity": renewed yearly at most, never expiring
    valid = far if bound.valid == INFINITY else float(bound.valid)
    return Lease6(
        key=key,
        netns_path=netns_path,
        netns_inode=inode,
        ifname=ifname,
        duid=duid,
        iaid=iaid,
        server_id=bound.server_id,
        server=bound.server,
        address=IPv6Interface(f"{bound.address}/{prefixlen}"),
        preferred=bound.preferred,
        valid=bound.valid,
        t1=t1,
        t2=t2,
        bound_at=at,
        renew_at=at + min(t1, valid),
        rebind_at=at + min(t2, valid),
        expires_at=at + valid,
        state=Lease6State.BOUND,
        dns_servers=bound.dns_servers,
        domains=bound.domains,
        meta=meta,
    )


# -- journal -------------------------------------------------------------------------------


def to_record(lease: Lease6) -> dict[str, Any]:
    return {
        "version": RECORD_VERSION,
        "key": lease.key,
        "netns_path": lease.netns_path,
        "netns_inode": lease.netns_inode,
        "ifname": lease.ifname,
        "duid": lease.duid.hex(),
        "iaid": lease.iaid,
        "server_id": lease.server_id.hex(),
        "server": str(lease.server),
        "address": str(lease.address),
        "preferred": lease.preferred,
        "valid": lease.valid,
        "t1": lease.t1,
        "t2": lease.t2,
        "bound_at": lease.bound_at,
        "renew_at": lease.renew_at,
        "rebind_at": lease.rebind_at,
        "expires_at": lease.expires_at,
        "state": str(lease.state),
        "dns_servers": [str(a) for a in lease.dns_servers],
        "domains": list(lease.domains),
        "meta": dict(lease.meta or {}),
    }


def from_record(record: Mapping[str, Any]) -> Lease6:
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"unknown record version {record.get('version')!r}")
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("field 'meta' is not an object")
    return Lease6(
        key=typed_field(record, "key", str),
        netns_path=typed_field(record, "netns_path", str),
        netns_inode=typed_field(record, "netns_inode", int),
        ifname=typed_field(record, "ifname", str),
        duid=bytes.fromhex(typed_field(record, "duid", str)),
        iaid=typed_field(record, "iaid", int),
        server_id=bytes.fromhex(typed_field(record, "server_id", str)),
        server=IPv6Address(typed_field(record, "server", str)),
        address=IPv6Interface(typed_field(record, "address", str)),
        preferred=typed_field(record, "preferred", int),
        valid=typed_field(record, "valid", int),
        t1=typed_field(record, "t1", int),
        t2=typed_field(record, "t2", int),
        bound_at=number_field(record, "bound_at"),
        renew_at=number_field(record, "renew_at"),
        rebind_at=number_field(record, "rebind_at"),
        expires_at=number_field(record, "expires_at"),
        state=Lease6State(typed_field(record, "state", str)),
        dns_servers=tuple(IPv6Address(str(a)) for a in record.get("dns_servers") or []),
        domains=tuple(str(d) for d in record.get("domains") or []),
        meta={str(k): str(v) for k, v in meta.items()},
    )


class Journal6(RecordJournal[Lease6]):
    """One JSON file per attachment under ``<state_dir>/leases6/``: the DHCPv4 lease
    journal's RecordJournal (atomic writes, corrupt records moved aside as ``*.corrupt``)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(
            state_dir,
            LEASES6_DIR,
            to_record=to_record,
            from_record=from_record,
            label="DHCPv6 lease journal",
        )
