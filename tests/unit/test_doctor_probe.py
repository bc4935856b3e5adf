"""doctor's DHCP probe: the parts that need no namespace (the probe itself runs in
tests/netns/test_doctor.py)."""

from __future__ import annotations

from cni_bridge_dhcp.ops.doctor.probe import PROBE_PREFIX, _random_mac


def test_probe_mac_is_random_locally_administered_unicast() -> None:
    macs = {_random_mac() for _ in range(32)}
    assert len(macs) == 32
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01, mac  # local bit set, multicast bit clear
        assert len(mac) == 17


def test_probe_link_name_fits_ifnamsiz() -> None:
    assert len(PROBE_PREFIX) + 6 <= 15
