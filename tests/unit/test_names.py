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


CONTAINER_IDS = {
    "abc": True,
    "0a_b.c-d": True,
    "A": True,
    "": False,
    "_abc": False,
    ".abc": False,
    "-abc": False,
    "a b": False,
    "a/b": False,
    "caf\u00e9": False,  # Go's [a-zA-Z0-9] is ASCII only
    "\u0661\u0662": False,  # non-ASCII digits: str.isalnum() would take them
    "abc\n": False,  # Go's $ is the end of the text; Python's re $ let this through
}


@pytest.mark.parametrize(("cid", "ok"), CONTAINER_IDS.items())
def test_container_id_and_network_name_follow_libcni(cid: str, ok: bool) -> None:
    from cni_bridge_dhcp.cni import names

    assert names.valid_cni_name(cid) is ok
    assert bool(names.CONTAINER_ID.match(cid)) is ok  # the lazily compiled pattern agrees
    if ok:
        names.validate_container_id(cid)
    else:
        with pytest.raises(CNIError) as err:
            names.validate_container_id(cid)
        assert err.value.code == 4


def test_mac_pattern_is_compiled_on_first_use() -> None:
    from cni_bridge_dhcp.cni import names

    assert names.MAC.match("aa:BB:cc:00:11:22")
    assert not names.MAC.match("aa:bb:cc:00:11")
    with pytest.raises(AttributeError):
        names.NO_SUCH_NAME  # noqa: B018
