"""The journal's record of the bridge port and the port's IPv6 settings (issue 12; no root)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.uplink import journal as uj
from cni_bridge_dhcp.agent.uplink import port as uplink
from tests.unit.test_uplink_journal import snapshot


def test_port_ifindex_defaults_to_the_snapshot_and_round_trips(tmp_path: Path) -> None:
    snap = replace(snapshot(), disable_ipv6="0")
    j = uj.Journal(bridge="cni0", uplink="eth0", spec="eth0", phase=uj.DONE, snapshot=snap)
    assert j.port_index() == snap.ifindex  # the port we made at the takeover
    uj.save(tmp_path, j)
    loaded = uj.load(tmp_path)
    assert loaded is not None and loaded.port_index() == 2
    assert loaded.snapshot is not None and loaded.snapshot.disable_ipv6 == "0"
    loaded.port_ifindex = 9  # a re-created NIC, re-enslaved
    uj.save(tmp_path, loaded)
    again = uj.load(tmp_path)
    assert again is not None and again.port_index() == 9 and again.snapshot == snap


def test_journal_of_an_older_version_loads(tmp_path: Path) -> None:
    j = uj.Journal(bridge="cni0", uplink="eth0", spec="eth0", phase=uj.DONE, snapshot=snapshot())
    uj.save(tmp_path, j)
    data = json.loads((tmp_path / "uplink.json").read_text())
    del data["port_ifindex"], data["snapshot"]["disable_ipv6"]
    (tmp_path / "uplink.json").write_text(json.dumps(data))
    loaded = uj.load(tmp_path)
    assert loaded is not None and loaded.port_index() == 2
    assert loaded.snapshot is not None and loaded.snapshot.disable_ipv6 is None


@pytest.mark.parametrize(
    ("accept_ra", "forwarding", "bridge"),
    [
        ("1", "0", "2"),  # a host that learned RAs keeps learning them once forwarding is on
        ("1", "1", "1"),  # a forwarding uplink ignored RAs: so does the bridge
        ("2", "1", "2"),
        ("0", "0", "0"),
        (None, None, None),  # no IPv6 on the node
    ],
)
def test_bridge_accept_ra(
    monkeypatch: pytest.MonkeyPatch,
    accept_ra: str | None,
    forwarding: str | None,
    bridge: str | None,
) -> None:
    def read(path: str) -> str | None:
        assert path == "net/ipv6/conf/eth0/forwarding"
        return forwarding

    monkeypatch.setattr(uplink, "read_sysctl", read)
    assert uplink._bridge_accept_ra(replace(snapshot(), accept_ra=accept_ra)) == bridge


@pytest.mark.parametrize("bad", ["7", 1.5, True, -3, [2], {"a": 1}])
def test_ill_typed_port_fields_are_ignored_not_fatal(tmp_path: Path, bad: object) -> None:
    j = uj.Journal(bridge="cni0", uplink="eth0", spec="eth0", phase=uj.DONE, snapshot=snapshot())
    uj.save(tmp_path, j)
    data = json.loads((tmp_path / "uplink.json").read_text())
    data["port_ifindex"] = bad
    data["snapshot"]["disable_ipv6"] = bad
    (tmp_path / "uplink.json").write_text(json.dumps(data))
    loaded = uj.load(tmp_path)
    assert loaded is not None and loaded.port_index() == 2  # the snapshot's
    assert loaded.snapshot is not None
    assert loaded.snapshot.disable_ipv6 is None
