"""Records of what ADD built for each attachment, so DEL, CHECK, GC and status find it.

One JSON file per (network, container id, ifname). A record is written as ``pending``
before anything is created and marked ``ready`` when ADD completes; a pending record found
at start-up is an interrupted ADD whose remains are torn down.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import statefile


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
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class AttachmentStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "attachments"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.dir / f"{digest}.json"

    def get(self, key: str) -> Attachment | None:
        data = statefile.read_json(self._path(key))
        if data is None:
            return None
        try:
            return Attachment.from_json(data)
        except TypeError:
            return None

    def put(self, att: Attachment) -> None:
        statefile.write_json(self._path(att.key), att.to_json())

    def remove(self, key: str) -> bool:
        return statefile.remove(self._path(key))

    def all(self) -> list[Attachment]:
        out: list[Attachment] = []
        for path in sorted(self.dir.glob("*.json")):
            data = statefile.read_json(path)
            if data is None:
                continue
            try:
                out.append(Attachment.from_json(data))
            except TypeError:
                continue
        return out

    def for_network(self, network: str) -> list[Attachment]:
        return [a for a in self.all() if a.network == network]

    def on_bridge(self, bridge: str) -> list[Attachment]:
        return [a for a in self.all() if a.bridge == bridge]
