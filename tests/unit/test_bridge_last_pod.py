"""A DEL asks whether its bridge still has pods: the answer must not cost a read of every
record (no root).

Every DEL ends by removing its record and asking whether it was the bridge's last (the
bridge's own rules go with its last pod). That loaded and checked every attachment record
on the event loop's thread: a DEL on a node with N pods read N files, a burst of N DELs
N^2. The first record found on the bridge answers the question.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.firewall.registry import FirewallRegistry, PodFirewall
from cni_bridge_dhcp.agent.state import attachments
from cni_bridge_dhcp.agent.state.attachments import Attachment, AttachmentStore


class _Fw:
    def __init__(self) -> None:
        self.removed: list[str] = []

    @property
    def backends(self) -> list[object]:
        return []

    def remove_bridge(self, bridge: str) -> None:
        self.removed.append(bridge)


def _att(n: int, bridge: str) -> Attachment:
    return Attachment(
        network="net",
        container_id=f"c{n}",
        ifname="eth0",
        netns=f"/run/netns/p{n}",
        netns_inode=n,
        bridge=bridge,
        host_veth=f"veth{n:08x}",
    )


def test_last_pod_check_reads_one_record_not_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AttachmentStore(tmp_path)
    for n in range(41):
        store.put(_att(n, "cni0"))
    store.put(_att(99, "other0"))
    reads: list[Path] = []
    real = attachments.statefile.read_json

    def counting(path: Path, *, aside: bool = False) -> dict[str, object] | None:
        reads.append(path)
        return real(path, aside=aside)

    monkeypatch.setattr(attachments.statefile, "read_json", counting)

    assert store.remove_was_last(_att(40, "cni0").key, "cni0") is False  # 40 pods left
    assert len(reads) <= 1, f"{len(reads)} records read to see the bridge is in use"
    assert store.get(_att(40, "cni0").key) is None
    for n in range(1, 40):
        store.remove(_att(n, "cni0").key)
    assert store.remove_was_last(_att(0, "cni0").key, "cni0") is True  # the last one
    assert store.remove_was_last(_att(0, "cni0").key, "cni0") is True  # a retried DEL
    assert store.remove_was_last(_att(99, "other0").key, "") is False  # no bridge: none


def test_the_bridge_rules_go_from_every_firewall_in_use(tmp_path: Path) -> None:
    made: dict[str, _Fw] = {}

    def make(requested: str) -> PodFirewall:
        made[requested] = _Fw()
        return made[requested]  # type: ignore[return-value]

    registry = FirewallRegistry(AttachmentStore(tmp_path), make)

    async def scenario() -> None:
        await registry.firewall_for("auto")
        await registry.firewall_for("iptables")  # a network asking for another backend
        await registry.remove_bridge_rules("cni0")

    asyncio.run(scenario())
    assert {name: fw.removed for name, fw in made.items()} == {
        "auto": ["cni0"],
        "iptables": ["cni0"],
    }
