"""Result conversion: the internal 1.1.0 result rendered for every supported version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cni_bridge_dhcp.cni.result import SUPPORTED_VERSIONS, convert, to_internal

GOLDEN = Path(__file__).parent / "golden"


def _internal() -> dict[str, object]:
    return json.loads((GOLDEN / "internal.json").read_text())


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_conversion_matches_golden(version: str) -> None:
    expected = json.loads((GOLDEN / f"result-{version}.json").read_text())
    assert convert(_internal(), version) == expected


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_legacy_versions_tag_each_ip_with_its_family(version: str) -> None:
    out = convert(_internal(), version)
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_modern_versions_have_no_ip_version_field(version: str) -> None:
    assert all("version" not in ip for ip in convert(_internal(), version)["ips"])


def test_only_1_1_0_keeps_route_and_interface_extensions() -> None:
    new = convert(_internal(), "1.1.0")
    old = convert(_internal(), "1.0.0")
    assert new["routes"][1]["priority"] == 100 and new["interfaces"][2]["mtu"] == 1500
    assert "priority" not in old["routes"][1] and "mtu" not in old["interfaces"][2]


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_prev_result_round_trips_to_internal(version: str) -> None:
    internal = to_internal(convert(_internal(), version))
    assert internal["cniVersion"] == "1.1.0"
    assert [ip["address"] for ip in internal["ips"]] == ["192.168.77.101/24", "fd00::65/64"]
    assert all("version" not in ip for ip in internal["ips"])


def test_unsupported_version_is_refused() -> None:
    with pytest.raises(ValueError):
        convert(_internal(), "0.2.0")


def test_empty_dns_is_omitted_from_modern_results_only() -> None:
    bare = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}]}
    assert "dns" not in convert(bare, "1.0.0")
    assert convert(bare, "0.4.0")["dns"] == {}
