"""The lease journal: one JSON file per attachment under ``<state_dir>/leases/``.

A ``RecordJournal`` (state/recordjournal.py: atomic writes, corrupt records logged and
renamed aside to ``*.corrupt``), as the DHCPv6 lease journal is. The record form
(``to_record`` / ``from_record``, version 1) is kept byte-compatible: old agents' records
load in new ones.
All methods block on disk I/O: the manager calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from ...cni.defaults import LEASES_DIR
from ..state.recordjournal import RecordJournal
from ..state.recordjournal import number_field as _number
from ..state.recordjournal import opt_str_field as _opt_str
from ..state.recordjournal import typed_field as _typed
from .identity import CLIENT_ID_MODES
from .lease import Lease, LeaseState

RECORD_VERSION = 1


class Journal(RecordJournal[Lease]):
    def __init__(self, state_dir: Path) -> None:
        super().__init__(
            state_dir,
            LEASES_DIR,
            to_record=to_record,
            from_record=from_record,
            label="lease journal",
        )


# -- the record form ---------------------------------------------------------------------------


def to_record(lease: Lease) -> dict[str, Any]:
    return {
        "version": RECORD_VERSION,
        "key": lease.key,
        "address": str(lease.address),
        "server_id": str(lease.server_id),
        "server_mac": lease.server_mac,
        "router": str(lease.router) if lease.router else None,
        "dns_servers": [str(a) for a in lease.dns_servers],
        "domain": lease.domain,
        "search": list(lease.search),
        "mtu": lease.mtu,
        "routes": [[str(net), str(gw)] for net, gw in lease.routes],
        "lease_time": lease.lease_time,
        "t1": lease.t1,
        "t2": lease.t2,
        "bound_at": lease.bound_at,
        "renew_at": lease.renew_at,
        "rebind_at": lease.rebind_at,
        "expires_at": lease.expires_at,
        "state": str(lease.state),
        "netns_path": lease.netns_path,
        "netns_inode": lease.netns_inode,
        "ifname": lease.ifname,
        "mac": lease.mac,
        "client_id": lease.client_id.hex(),
        "hostname": lease.hostname,
        "meta": dict(lease.meta),
        "extra_request": list(lease.extra_request),
        "provide": [[code, value.hex()] for code, value in lease.provide],
        "options": {str(code): value.hex() for code, value in sorted(lease.options.items())},
        "broadcast_flag": lease.broadcast_flag,
        "server_allow_list": [str(a) for a in lease.server_allow_list],
        "arp_probe_wait": lease.arp_probe_wait,
        "server_macs": [[str(ip), mac] for ip, mac in lease.server_macs],
        "client_id_mode": lease.client_id_mode,
    }


def from_record(record: Mapping[str, Any]) -> Lease:
    """Rebuild a Lease; raises ValueError (or KeyError/TypeError) on any malformed field."""
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"unknown record version {record.get('version')!r}")
    router = _opt_str(record, "router")
    mtu = record.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)):
        raise ValueError("field 'mtu' is not an integer")
    meta = _typed(record, "meta", dict)
    return Lease(
        key=_typed(record, "key", str),
        address=IPv4Interface(_typed(record, "address", str)),
        server_id=IPv4Address(_typed(record, "server_id", str)),
        server_mac=_opt_str(record, "server_mac"),
        router=IPv4Address(router) if router else None,
        dns_servers=tuple(IPv4Address(a) for a in _typed(record, "dns_servers", list)),
        domain=_opt_str(record, "domain"),
        search=tuple(str(s) for s in _typed(record, "search", list)),
        mtu=mtu,
        routes=tuple(
            (IPv4Network(net), IPv4Address(gw)) for net, gw in _typed(record, "routes", list)
        ),
        lease_time=_number(record, "lease_time"),
        t1=_number(record, "t1"),
        t2=_number(record, "t2"),
        bound_at=_number(record, "bound_at"),
        renew_at=_number(record, "renew_at"),
        rebind_at=_number(record, "rebind_at"),
        expires_at=_number(record, "expires_at"),
        state=LeaseState(_typed(record, "state", str)),
        netns_path=_typed(record, "netns_path", str),
        netns_inode=_typed(record, "netns_inode", int),
        ifname=_typed(record, "ifname", str),
        mac=_typed(record, "mac", str),
        client_id=bytes.fromhex(_typed(record, "client_id", str)),
        hostname=_opt_str(record, "hostname"),
        meta={str(k): str(v) for k, v in meta.items()},
        extra_request=tuple(int(c) for c in _typed(record, "extra_request", list)),
        provide=tuple(
            (int(code), bytes.fromhex(value)) for code, value in _typed(record, "provide", list)
        ),
        options={int(k): bytes.fromhex(v) for k, v in _typed(record, "options", dict).items()},
        broadcast_flag=bool(record.get("broadcast_flag", False)),
        server_allow_list=_allow_list(record),
        arp_probe_wait=_opt_seconds(record, "arp_probe_wait"),
        server_macs=_server_macs(record),
        client_id_mode=_client_id_mode(record),
    )


def _opt_seconds(record: Mapping[str, Any], name: str) -> float | None:
    # absent in records written before the key existed
    return None if record.get(name) is None else _number(record, name)


def _allow_list(record: Mapping[str, Any]) -> tuple[IPv4Address, ...]:
    # absent in records written before the allow list existed
    raw = record.get("server_allow_list", [])
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise ValueError("field 'server_allow_list' is not a list of strings")
    return tuple(IPv4Address(a) for a in raw)


def _server_macs(record: Mapping[str, Any]) -> tuple[tuple[IPv4Address, str], ...]:
    # absent in records written before pinning existed
    raw = record.get("server_macs", [])
    if not isinstance(raw, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in raw
    ):
        raise ValueError("field 'server_macs' is not a list of [ip, mac] pairs")
    return tuple((IPv4Address(ip), mac) for ip, mac in raw)


def _client_id_mode(record: Mapping[str, Any]) -> str:
    # absent in records written before ipam.clientId existed: they sent the pod identity
    mode = record.get("client_id_mode", "pod")
    if mode not in CLIENT_ID_MODES:
        raise ValueError(f"field 'client_id_mode' is not one of {', '.join(CLIENT_ID_MODES)}")
    return str(mode)
