"""Attachment records on disk: the typed fields read what earlier releases wrote.

The three records below were written by main's (e1b6d45) ``Attachment.to_json`` exactly as
its ADD paths fill them (main role with our DHCP, main role with a delegated IPAM plugin
while still pending, IPAM role): every key it writes, ``result`` bag included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.agent.state.attachments import (
    Attachment,
    AttachmentState,
    AttachmentStore,
    DelegatedIpam,
    FirewallChoice,
    load_records,
)

MAIN_DHCP_READY = r"""{"network": "lan", "container_id": "c0ffee", "ifname": "eth0", "netns": "/var/run/netns/cni-1", "netns_inode": 4026532999, "bridge": "cbd0", "host_veth": "veth1a2b3c4d", "state": "ready", "mac": "02:42:ac:11:00:02", "ips": ["192.168.77.148/24"], "ipam": "dhcp", "pod_namespace": "default", "pod_name": "web-0", "uplink": "eth0", "result": {"fw": {"ipMasq": false, "macspoofchk": true, "portIsolation": false, "backend": "auto"}, "cni": {"cniVersion": "1.1.0", "interfaces": [{"name": "cbd0", "mac": "aa:bb:cc:00:00:01"}, {"name": "veth1a2b3c4d", "mac": "aa:bb:cc:00:00:02"}, {"name": "eth0", "mac": "02:42:ac:11:00:02", "sandbox": "/var/run/netns/cni-1", "mtu": 1500}], "ips": [{"address": "192.168.77.148/24", "interface": 2, "gateway": "192.168.77.1"}], "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.77.1"}], "dns": {"nameservers": ["192.168.77.1"]}}}, "created": 1764640000.25}"""
MAIN_DELEGATED_PENDING = r"""{"network": "lan", "container_id": "c0ffee2", "ifname": "net1", "netns": "/var/run/netns/cni-2", "netns_inode": 4026533000, "bridge": "cbd0", "host_veth": "veth5e6f7a8b", "state": "pending", "mac": "", "ips": [], "ipam": "host-local", "pod_namespace": "", "pod_name": "", "uplink": null, "result": {"fw": {"ipMasq": true, "macspoofchk": false, "portIsolation": true, "backend": "nftables"}, "delegate": {"conf": {"cniVersion": "1.0.0", "name": "lan", "type": "cni-bridge-dhcp", "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}, "cniPath": "/opt/cni/bin", "cniArgs": "IgnoreUnknown=1"}}, "created": 1764640001.0}"""
IPAM_ROLE_READY = r"""{"network": "mv", "container_id": "c0ffee3", "ifname": "eth0", "netns": "/var/run/netns/cni-3", "netns_inode": 4026533001, "bridge": "", "host_veth": "", "state": "ready", "mac": "02:00:00:00:00:03", "ips": ["192.168.77.150/24"], "ipam": "dhcp", "pod_namespace": "ns", "pod_name": "p", "uplink": null, "result": {"role": "ipam", "cni": {"cniVersion": "1.1.0", "ips": [{"address": "192.168.77.150/24", "gateway": "192.168.77.1"}], "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.77.1"}]}}, "created": 1764640002.5}"""

RECORDS = [MAIN_DHCP_READY, MAIN_DELEGATED_PENDING, IPAM_ROLE_READY]


@pytest.mark.parametrize("raw", RECORDS, ids=["main-dhcp", "main-delegated", "ipam-role"])
def test_records_main_wrote_load_and_round_trip_unchanged(raw: str) -> None:
    data = json.loads(raw)
    att = Attachment.from_json(data)
    assert att.to_json() == data
    # the same, key order included, once more through JSON
    assert json.dumps(Attachment.from_json(json.loads(json.dumps(att.to_json()))).to_json()) == (
        json.dumps(data)
    )


def test_typed_fields_carry_what_the_result_bag_held() -> None:
    main = Attachment.from_json(json.loads(MAIN_DHCP_READY))
    assert main.state is AttachmentState.READY and main.role == "main"
    assert main.firewall == FirewallChoice(ip_masq=False, macspoofchk=True, backend="auto")
    assert main.delegate is None
    assert main.cni_result is not None and main.cni_result["ips"][0]["gateway"] == "192.168.77.1"

    delegated = Attachment.from_json(json.loads(MAIN_DELEGATED_PENDING))
    assert delegated.state is AttachmentState.PENDING
    assert delegated.firewall_backend == "nftables"
    assert delegated.firewall is not None and delegated.firewall.port_isolation
    assert delegated.delegate == DelegatedIpam(
        conf=json.loads(MAIN_DELEGATED_PENDING)["result"]["delegate"]["conf"],
        cni_path="/opt/cni/bin",
        cni_args="IgnoreUnknown=1",
    )
    assert delegated.cni_result is None

    ipam = Attachment.from_json(json.loads(IPAM_ROLE_READY))
    assert ipam.role == "ipam" and ipam.firewall is None and ipam.firewall_backend == "auto"


def test_state_is_written_as_the_plain_string() -> None:
    att = Attachment.from_json(json.loads(MAIN_DELEGATED_PENDING))
    att.state = AttachmentState.READY
    assert json.loads(json.dumps(att.to_json()))["state"] == "ready"


def _store_with(tmp_path: Path, data: dict[str, Any]) -> tuple[AttachmentStore, Path]:
    store = AttachmentStore(tmp_path)
    good = Attachment.from_json(json.loads(MAIN_DHCP_READY))
    store.put(good)
    path = Path(store._path(good.key))
    path.write_text(json.dumps(data))
    return store, path


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"state": "done"}, "state"),
        ({"result": {"role": "sidecar"}}, "result.role"),
        ({"result": {"cni": ["not", "an", "object"]}}, "result.cni"),
        ({"result": {"fw": {"backend": 3}}}, "result.fw.backend"),
        ({"result": {"delegate": {"conf": {}, "cniPath": 1}}}, "result.delegate.cniPath"),
        ({"netns_inode": "4026532999"}, "netns_inode"),
    ],
)
def test_bad_fields_are_set_aside_as_corrupt(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    data = {**json.loads(MAIN_DHCP_READY), **change}
    store, path = _store_with(tmp_path, data)
    assert store.all() == []
    assert not path.exists()
    aside = list(path.parent.glob("*.corrupt"))
    assert len(aside) == 1
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Attachment.from_json(data)


def test_read_only_loader_skips_bad_records_and_moves_nothing(tmp_path: Path) -> None:
    data = {**json.loads(MAIN_DHCP_READY), "state": "done"}
    _, path = _store_with(tmp_path, data)
    ipam = Attachment.from_json(json.loads(IPAM_ROLE_READY))
    AttachmentStore(tmp_path).put(ipam)
    assert [a.key for a in load_records(tmp_path)] == [ipam.key]
    assert path.exists() and not list(path.parent.glob("*.corrupt"))
    assert load_records(tmp_path / "nowhere") == []
