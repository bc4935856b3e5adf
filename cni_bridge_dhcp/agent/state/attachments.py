"""Records of what ADD built for each attachment, so DEL, CHECK, GC and status find it.

One JSON file per (network, container id, ifname). A record is written as ``pending``
before anything is created and marked ``ready`` when ADD completes; a pending record found
at start-up is an interrupted ADD whose remains are torn down.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...cni.defaults import ATTACHMENTS_DIR
from . import statefile
from .statefile import ShapeError


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    return f"{network}/{container_id}/{ifname}"


@dataclass
class Attachment:
    network: str
    container_id: str
    ifname: str
    netns: str
    netns_inode: int
    bridge: str
    host_veth: str
    state: str = "pending"  # "pending" | "ready"
    mac: str = ""
    ips: list[str] = field(default_factory=list)
    ipam: str = ""  # "dhcp" (ours) or the delegated IPAM plugin type
    pod_namespace: str = ""
    pod_name: str = ""
    uplink: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0

    @property
    def key(self) -> str:
        return attachment_key(self.network, self.container_id, self.ifname)

    @property
    def firewall_backend(self) -> str:
        """The firewallBackend the pod's rules were made with (ADD records it)."""
        return str(self.result.get("fw", {}).get("backend", "auto"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        """Rebuild a record; ShapeError naming the first field that is wrong."""
        check_shape(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


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

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.dir / f"{digest}.json"

    def get(self, key: str) -> Attachment | None:
        return self._load(self._path(key))

    def _load(self, path: Path) -> Attachment | None:
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
        for path in sorted(self.dir.glob("*.json")):
            att = self._load(path)
            if att is not None:
                out.append(att)
        return out

    def for_network(self, network: str) -> list[Attachment]:
        return [a for a in self.all() if a.network == network]

    def on_bridge(self, bridge: str) -> list[Attachment]:
        return [a for a in self.all() if a.bridge == bridge]
