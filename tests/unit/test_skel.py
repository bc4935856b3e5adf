"""The plugin's CNI protocol layer: env/stdin validation, VERSION, and the error funnel."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from cni_bridge_dhcp.cni.defaults import DEFAULT_SOCKET
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode
from cni_bridge_dhcp.cni.result import SUPPORTED_VERSIONS
from cni_bridge_dhcp.plugin.skel import main, parse_cni_args

BASE_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/var/run/netns/test",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def conf(version: str = "1.0.0", **extra: Any) -> bytes:
    return json.dumps(
        {"cniVersion": version, "name": "lan", "type": "cni-bridge-dhcp", **extra}
    ).encode()


class FakeAgent:
    """Records what the plugin would send; answers like an agent would."""

    def __init__(self, result: dict[str, Any] | None = None, error: CNIError | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.result = result or {}
        self.error = error

    def __call__(self, socket_path: str, request: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.calls.append((socket_path, request))
        if self.error:
            raise self.error
        return self.result


def run(
    env: dict[str, str], stdin: bytes, agent: FakeAgent | None = None
) -> tuple[int, dict[str, Any] | None]:
    out = io.StringIO()
    code = main(env, stdin, out, call=agent or FakeAgent())
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None


def test_version_answers_without_the_agent() -> None:
    agent = FakeAgent()
    code, out = run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}', agent)
    assert code == 0
    assert out == {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert agent.calls == []


def test_version_with_empty_stdin_uses_latest() -> None:
    code, out = run({"CNI_COMMAND": "VERSION"}, b"")
    assert code == 0 and out is not None and out["cniVersion"] == "1.1.0"


@pytest.mark.parametrize(
    ("env_change", "stdin", "code", "needle"),
    [
        ({"CNI_COMMAND": ""}, conf(), 4, "CNI_COMMAND"),
        ({"CNI_COMMAND": "FROB"}, conf(), 4, "FROB"),
        ({}, b"{not json", 6, "not valid JSON"),
        ({}, b"[1,2]", 6, "JSON object"),
        ({}, b"\xff\xfe", 6, "not valid JSON"),
        ({}, conf("9.9.9"), 1, "9.9.9"),
        ({}, b'{"name":"lan","type":"x"}', 1, "cniVersion is missing"),
        ({}, conf("0.2.0"), 1, "0.2.0"),
        ({"CNI_CONTAINERID": ""}, conf(), 4, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "../etc"}, conf(), 4, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "a/b"}, conf(), 4, "CNI_CONTAINERID"),
        ({"CNI_NETNS": ""}, conf(), 4, "CNI_NETNS"),
        ({"CNI_NETNS": "relative/path"}, conf(), 4, "absolute"),
        ({"CNI_IFNAME": ""}, conf(), 4, "CNI_IFNAME"),
        ({"CNI_IFNAME": "a" * 16}, conf(), 4, "longer than 15"),
        ({"CNI_IFNAME": "et/h0"}, conf(), 4, "not a valid interface name"),
        ({"CNI_IFNAME": ".."}, conf(), 4, "not a valid interface name"),
        ({"CNI_IFNAME": "eth 0"}, conf(), 4, "not a valid interface name"),
        ({"CNI_IFNAME": "e%d"}, conf(), 4, "'%' as a name template"),
        ({"CNI_PATH": ""}, conf(), 4, "CNI_PATH"),
        ({"CNI_ARGS": "K8S_POD_NAME"}, conf(), 4, "CNI_ARGS"),
        ({}, json.dumps({"cniVersion": "1.0.0", "type": "x"}).encode(), 7, "name"),
        (
            {},
            json.dumps({"cniVersion": "1.0.0", "name": "bad name!", "type": "x"}).encode(),
            7,
            "name",
        ),
        ({}, conf(agentSocket="relative.sock"), 7, "agentSocket"),
        ({}, conf(agentSocket=5), 7, "agentSocket"),
        ({"CNI_COMMAND": "CHECK"}, conf("0.3.1"), 1, "CHECK"),
        ({"CNI_COMMAND": "GC"}, conf("1.0.0"), 1, "GC"),
        ({"CNI_COMMAND": "STATUS"}, conf("1.0.0"), 1, "STATUS"),
    ],
)
def test_bad_input_gets_the_right_code_and_never_reaches_the_agent(
    env_change: dict[str, str], stdin: bytes, code: int, needle: str
) -> None:
    agent = FakeAgent()
    rc, out = run({**BASE_ENV, **env_change}, stdin, agent)
    assert rc == 1
    assert out is not None and out["code"] == code
    assert needle in out["msg"]
    assert agent.calls == []


def test_oversized_stdin_is_a_decode_error() -> None:
    rc, out = run(BASE_ENV, b" " * (1 << 20) + b"{}")
    assert rc == 1 and out is not None and out["code"] == 6


def test_error_json_uses_the_requested_version() -> None:
    _, out = run({**BASE_ENV, "CNI_CONTAINERID": ""}, conf("0.4.0"))
    assert out is not None and out["cniVersion"] == "0.4.0"


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_add_forwards_and_converts_the_result(version: str) -> None:
    internal = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "0a:00:00:00:00:01", "sandbox": "/x", "mtu": 1500}],
        "ips": [{"address": "192.168.77.101/24", "gateway": "192.168.77.10", "interface": 0}],
    }
    agent = FakeAgent(result=internal)
    rc, out = run(
        {**BASE_ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"}, conf(version), agent
    )
    assert rc == 0 and out is not None
    assert out["cniVersion"] == version
    assert out["ips"][0]["address"] == "192.168.77.101/24"
    assert ("version" in out["ips"][0]) == version.startswith("0.")
    socket_path, request = agent.calls[0]
    assert socket_path == DEFAULT_SOCKET
    assert request["op"] == "ADD" and request["cniVersion"] == version
    assert request["env"]["args"] == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"}
    assert request["env"]["containerId"] == "abc123"


def test_agent_socket_key_selects_the_socket() -> None:
    agent = FakeAgent()
    run({**BASE_ENV, "CNI_COMMAND": "DEL"}, conf(agentSocket="/run/x/agent.sock"), agent)
    assert agent.calls[0][0] == "/run/x/agent.sock"


def test_del_may_omit_netns_and_prints_nothing() -> None:
    agent = FakeAgent()
    rc, out = run({**BASE_ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, conf(), agent)
    assert rc == 0 and out is None
    assert agent.calls[0][1]["env"]["netns"] == ""


def test_agent_errors_pass_through_with_their_code() -> None:
    agent = FakeAgent(error=CNIError(100, "DHCP timeout on eth0", "no OFFER"))
    rc, out = run(BASE_ENV, conf(), agent)
    assert rc == 1 and out == {
        "cniVersion": "1.0.0",
        "code": 100,
        "msg": "DHCP timeout on eth0",
        "details": "no OFFER",
    }


def test_unexpected_exception_becomes_code_999_without_traceback() -> None:
    def boom(*a: Any, **k: Any) -> dict[str, Any]:
        raise RuntimeError("kaboom")

    out_io = io.StringIO()
    rc = main(BASE_ENV, conf(), out_io, call=boom)
    out = json.loads(out_io.getvalue())
    assert rc == 1 and out["code"] == 999 and "kaboom" in out["msg"]
    assert "Traceback" not in json.dumps(out)


def test_agent_down_is_try_again_later_naming_the_socket(tmp_path: Any) -> None:
    sock = str(tmp_path / "absent.sock")
    out_io = io.StringIO()
    rc = main(BASE_ENV, conf(agentSocket=sock), out_io)
    out = json.loads(out_io.getvalue())
    assert rc == 1 and out["code"] == ErrorCode.TRY_AGAIN_LATER
    assert sock in out["msg"] and "cni-bridge-dhcp daemon" in out["details"]


def test_status_with_agent_down_is_code_50(tmp_path: Any) -> None:
    sock = str(tmp_path / "absent.sock")
    out_io = io.StringIO()
    rc = main({"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"}, conf("1.1.0", agentSocket=sock), out_io)
    assert rc == 1 and json.loads(out_io.getvalue())["code"] == 50


def test_cni_args_parsing() -> None:
    assert parse_cni_args("") == {}
    assert parse_cni_args("A=1;;B=x=y; ") == {"A": "1", "B": "x=y"}
    with pytest.raises(CNIError) as exc:
        parse_cni_args("A=1;oops")
    assert exc.value.code == 4 and "oops" in exc.value.msg


def test_role_follows_the_name_the_runtime_execd() -> None:
    from cni_bridge_dhcp.plugin.skel import executable_name, role_for

    assert executable_name("/opt/cni/bin/cni-bridge-dhcp") == "cni-bridge-dhcp"
    assert executable_name("/opt/cni/bin/dhcp") == "dhcp"
    assert executable_name("/x/cni_bridge_dhcp/__main__.py") == "cni-bridge-dhcp"
    macvlan = {"type": "macvlan", "ipam": {"type": "cni-bridge-dhcp"}}
    assert role_for(macvlan, "cni-bridge-dhcp") == "ipam"
    assert (
        role_for({"type": "cni-bridge-dhcp", "ipam": {"type": "dhcp"}}, "cni-bridge-dhcp") == "main"
    )
    # Installed as `dhcp` to replace the reference IPAM daemon's client.
    assert role_for({"type": "macvlan", "ipam": {"type": "dhcp"}}, "dhcp") == "ipam"


def test_ipam_role_uses_the_ipam_sections_socket() -> None:
    agent = FakeAgent(result={"cniVersion": "1.1.0", "ips": [{"address": "192.168.77.150/24"}]})
    conf_ipam = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "lan",
            "type": "macvlan",
            "master": "eth0",
            "ipam": {"type": "cni-bridge-dhcp", "daemonSocketPath": "/run/x/dhcp.sock"},
        }
    ).encode()
    rc, out = run(BASE_ENV, conf_ipam, agent)
    assert rc == 0 and out is not None and out["ips"][0]["address"] == "192.168.77.150/24"
    socket_path, request = agent.calls[0]
    assert socket_path == "/run/x/dhcp.sock" and request["role"] == "ipam"
