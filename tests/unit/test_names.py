"""One interface-name rule (cni/names.py) for CNI_IFNAME, the bridge key and the installer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.config import parse_netconf
from cni_bridge_dhcp.cni.errors import CNIError
from cni_bridge_dhcp.cni.names import MAX_IFNAME, valid_ifname, validate_ifname

INSTALL = Path(__file__).resolve().parents[2] / "deploy" / "install.py"
NAMES = {
    "eth0": True,
    "x" * MAX_IFNAME: True,
    "x" * (MAX_IFNAME + 1): False,
    "": False,
    ".": False,
    "..": False,
    "a/b": False,
    "a:b": False,
    "a b": False,
    "a\tb": False,
}


def _installer_problem(key: str, value: str) -> str | None:
    spec = importlib.util.spec_from_file_location("install", INSTALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    problem: str | None = module._ifname_problem(key, value)
    return problem


@pytest.mark.parametrize(("name", "ok"), NAMES.items())
def test_every_caller_applies_the_same_rule(name: str, ok: bool) -> None:
    assert MAX_IFNAME == 15
    assert valid_ifname(name) is ok
    assert (_installer_problem("BRIDGE", name) is None) is ok
    conf = {"cniVersion": "1.0.0", "name": "lan", "type": "cni-bridge-dhcp", "bridge": name}
    if ok:
        assert parse_netconf(conf).bridge == name
        validate_ifname(name)
    else:
        with pytest.raises(CNIError):
            parse_netconf(conf)
        with pytest.raises(CNIError):
            validate_ifname(name)
