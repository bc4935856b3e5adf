"""Records of what ADD built for each attachment, so DEL, CHECK, GC and status find it.

One JSON file per (network, container id, ifname). A record is written as ``pending``
before anything is created and marked ``ready`` when ADD completes; a pending record found
at start-up is an interrupted ADD whose remains are torn down.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from ...cni.defaults import ATTACHMENTS_DIR
from . import statefile
from .statefile import ShapeError


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    return f"{network}/{container_id}/{ifname}"


class AttachmentState(StrEnum):
    """Where an attachment's ADD got to; the value is what the record file holds."""

    PENDING = "pending"  # ADD started (or its undo failed): the cleanups tear it down
    READY = "ready"  # ADD completed


Role = Literal["main", "ipam"]


@dataclass
class FirewallChoice:
    """The firewall settings the pod's rules were made with (``result.fw`` on disk)."""

    ip_masq: bool = False
    macspoofchk: bool = False
    port_isolation: bool = False
    backend: str = "auto"  # the firewallBackend requested in the network config


@dataclass
class DelegatedIpam:
    """What DEL needs to run a delegated IPAM plugin again (``result.delegate`` on disk)."""

    conf: dict[str, Any] | None  # the network config as ADD received it
    cni_path: str = ""
    cni_args: str = ""


@dataclass
class Attachment:
    network: str
    container_id: str
    ifname: str
    netns: str
    netns_inode: int
    bridge: str
    host_veth: str
    state: AttachmentState = AttachmentState.PENDING
    mac: str = ""
    ips: list[str] = field(default_factory=list)
    ipam: str = ""  # "dhcp" (ours) or the delegated IPAM plugin type
    pod_namespace: str = ""
    pod_name: str = ""
    uplink: str | None = None
    created: float = 0.0
    # On disk these four live in the record's "result" object (see to_json).
    role: Role = "main"  # "ipam": only the lease is ours; link and rules are the main plugin's
    firewall: FirewallChoice | None = None  # None: no rules of ours (IPAM role)
    delegate: DelegatedIpam | None = None
    cni_result: dict[str, Any] | None = None  # the CNI result ADD answered (ready only)

    @property
    def key(self) -> str:
        return attachment_key(self.network, self.container_id, self.ifname)

    @property
    def firewall_backend(self) -> str:
        """The firewallBackend the pod's rules were made with (ADD records it)."""
        return self.firewall.backend if self.firewall is not None else "auto"

    def to_json(self) -> dict[str, Any]:
        """The record file's JSON, in the shape every release so far wrote and reads."""
        result: dict[str, Any] = {}
        if self.role == "ipam":
            result["role"] = "ipam"
        if self.firewall is not None:
            fw = self.firewall
            result["fw"] = {
                "ipMasq": fw.ip_masq,
                "macspoofchk": fw.macspoofchk,
                "portIsolation": fw.port_isolation,
                "backend": fw.backend,
            }
        if self.delegate is not None:
            d = self.delegate
            result["delegate"] = {"conf": d.conf, "cniPath": d.cni_path, "cniArgs": d.cni_args}
        if self.cni_result is not None:
            result["cni"] = self.cni_result
        return {
            "network": self.network,
            "container_id": self.container_id,
            "ifname": self.ifname,
            "netns": self.netns,
            "netns_inode": self.netns_inode,
            "bridge": self.bridge,
            "host_veth": self.host_veth,
            "state": str(self.state),
            "mac": self.mac,
            "ips": list(self.ips),
            "ipam": self.ipam,
            "pod_namespace": self.pod_namespace,
            "pod_name": self.pod_name,
            "uplink": self.uplink,
            "result": result,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        """Rebuild a record; ShapeError naming the first field that is wrong."""
        check_shape(data)
        result: dict[str, Any] = data.get("result", {})
        fw = result.get("fw")
        delegate = result.get("delegate")
        cni = result.get("cni")
        return cls(
            network=data["network"],
            container_id=data["container_id"],
            ifname=data["ifname"],
            netns=data["netns"],
            netns_inode=data["netns_inode"],
            bridge=data["bridge"],
            host_veth=data["host_veth"],
            state=AttachmentState(data.get("state", "pending")),
            mac=data.get("mac", ""),
            ips=list(data.get("ips", [])),
            ipam=data.get("ipam", ""),
            pod_namespace=data.get("pod_namespace", ""),
            pod_name=data.get("pod_name", ""),
            uplink=data.get("uplink"),
            created=float(data.get("created", 0.0)),
            role="ipam" if result.get("role") == "ipam" else "main",
            firewall=None
            if fw is None
            else FirewallChoice(
                ip_masq=bool(fw.get("ipMasq", False)),
                macspoofchk=bool(fw.get("macspoofchk", False)),
                port_isolation=bool(fw.get("portIsolation", False)),
                backend=fw.get("backend", "auto"),
            ),
            delegate=None
            if delegate is None
            else DelegatedIpam(
                conf=delegate.get("conf"),
                cni_path=delegate.get("cniPath", ""),
                cni_args=delegate.get("cniArgs", ""),
            ),
            cni_result=cni if isinstance(cni, dict) else None,
        )


_STR_FIELDS = ("network", "container_id", "ifname", "netns", "bridge", "host_veth")
_OPT_STR_FIELDS = ("mac", "ipam", "pod_namespace", "pod_name")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_shape(data: dict[str, Any]) -> None:
    """Every field the agent later acts on has the type and form ADD wrote."""
    for name in _STR_FIELDS:
        if not isinstance(data.get(name), str):
            raise ShapeError(name, "is missing or not a string")
    for name in _OPT_STR_FIELDS:
        if not isinstance(data.get(name, ""), str):
            raise ShapeError(name, "is not a string")
    if not _int(data.get("netns_inode")):
        raise ShapeError("netns_inode", "is missing or not an integer")
    if data.get("state", "pending") not in ("pending", "ready"):
        raise ShapeError("state", "is neither 'pending' nor 'ready'")
    uplink = data.get("uplink")
    if uplink is not None and not isinstance(uplink, str):
        raise ShapeError("uplink", "is not a string")
    created = data.get("created", 0.0)
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise ShapeError("created", "is not a number")
    ips = data.get("ips", [])
    if not isinstance(ips, list):
        raise ShapeError("ips", "is not a list")
    for n, ip in enumerate(ips):
        try:
            if not isinstance(ip, str):
                raise ValueError
            ipaddress.ip_interface(ip)
        except ValueError:
            raise ShapeError(f"ips[{n}]", f"{ip!r} is not an address with a prefix") from None
    result = data.get("result", {})
    if not isinstance(result, dict):
        raise ShapeError("result", "is not an object")
    fw = result.get("fw", {})
    if not isinstance(fw, dict):
        raise ShapeError("result.fw", "is not an object")
    if result.get("role", "main") not in ("main", "ipam"):
        raise ShapeError("result.role", "is neither 'main' nor 'ipam'")
    cni = result.get("cni")
    if cni is not None and not isinstance(cni, dict):
        raise ShapeError("result.cni", "is not an object")
    if not isinstance(fw.get("backend", "auto"), str):
        raise ShapeError("result.fw.backend", "is not a string")
    delegate = result.get("delegate")
    if delegate is not None:
        if not isinstance(delegate, dict):
            raise ShapeError("result.delegate", "is not an object")
        if not isinstance(delegate.get("conf"), dict | None):
            raise ShapeError("result.delegate.conf", "is not an object")
        for name in ("cniPath", "cniArgs"):
            if not isinstance(delegate.get(name, ""), str):
                raise ShapeError(f"result.delegate.{name}", "is not a string")


class AttachmentStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / ATTACHMENTS_DIR
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir = str(self.dir)

    def _path(self, key: str) -> str:
        return statefile.keyed_file(self._dir, key, 32)

    def _files(self) -> list[str]:
        with os.scandir(self._dir) as entries:
            return [e.path for e in entries if e.name.endswith(".json") and e.name[0] != "."]

    def get(self, key: str) -> Attachment | None:
        return self._load(self._path(key))

    def _load(self, path: str) -> Attachment | None:
        """The record in ``path``; a bad one is set aside as ``*.corrupt`` (never raised)."""
        data = statefile.read_json(path, aside=True)
        if data is None:
            return None
        try:
            att = Attachment.from_json(data)
            if self._path(att.key) != path:
                raise ShapeError("network/container_id/ifname", "do not match the file name")
        except (ShapeError, TypeError) as exc:
            statefile.set_aside(path, f"attachment record: {exc}")
            return None
        return att

    def put(self, att: Attachment) -> None:
        statefile.write_json(self._path(att.key), att.to_json())

    def remove(self, key: str) -> bool:
        return statefile.remove(self._path(key))

    def all(self) -> list[Attachment]:
        out: list[Attachment] = []
        for path in sorted(self._files()):
            att = self._load(path)
            if att is not None:
                out.append(att)
        return out

    def for_network(self, network: str) -> list[Attachment]:
        return [a for a in self.all() if a.network == network]

    def on_bridge(self, bridge: str) -> list[Attachment]:
        return [a for a in self.all() if a.bridge == bridge]

    def remove_was_last(self, key: str, bridge: str) -> bool:
        """Remove ``key``'s record; whether it was the last on ``bridge`` (False for no
        bridge). Together: every DEL asks both, off the event loop, in one trip."""
        self.remove(key)
        return bool(bridge) and not self.any_on_bridge(bridge)

    def any_on_bridge(self, bridge: str) -> bool:
        """Whether any record is on ``bridge``; stops at the first one (every DEL asks)."""
        for path in self._files():
            att = self._load(path)
            if att is not None and att.bridge == bridge:
                return True
        return False


def load_records(state_dir: Path) -> list[Attachment]:
    """Every well-formed record under ``state_dir``, read only: for tools (doctor) that
    must not change the agent's state; a bad record is skipped, not set aside."""
    folder = state_dir / ATTACHMENTS_DIR
    if not folder.is_dir():
        return []
    out: list[Attachment] = []
    for path in sorted(folder.glob("*.json")):
        data = statefile.read_json(path)
        if data is None:
            continue
        try:
            out.append(Attachment.from_json(data))
        except (ShapeError, TypeError, ValueError):
            continue
    return out
