"""The CNI protocol on the plugin's exec path: env + stdin in, JSON out, one error funnel.

Standard library only, and the only module that writes to stdout. VERSION is answered
here; everything else is validated here and forwarded to the agent.
"""

from __future__ import annotations

import sys

from ..cni import jsonfast, lean_os
from ..cni.errors import CNIError, ErrorCode
from ..cni.result import LATEST, SUPPORTED_VERSIONS, convert, is_supported, version_tuple

# Every exec pays for what this module imports, VERSION included: the agent client (socket,
# wire), the name rules (regexes) and the typing helpers are imported where a command that
# needs them gets to them (tests/unit/test_plugin_boundary.py checks what VERSION loads).
# A bare constant, not typing.TYPE_CHECKING: importing typing costs ~1 ms per exec.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TextIO

    Caller = Callable[..., dict[str, Any]]

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
MAX_STDIN = 1 << 20
_MIN_VERSION = {"CHECK": (0, 4, 0), "GC": (1, 1, 0), "STATUS": (1, 1, 0)}


def parse_cni_args(raw: str) -> dict[str, str]:
    """Parse CNI_ARGS ``K=V;K2=V2`` (empty segments ignored)."""
    out: dict[str, str] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise CNIError(
                ErrorCode.INVALID_ENV, f"CNI_ARGS: invalid pair {part!r}, expected KEY=VALUE"
            )
        out[key.strip()] = value.strip()
    return out


def _need(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "")
    if not value:
        raise CNIError(ErrorCode.INVALID_ENV, f"{key} is not set")
    return value


def _decode_stdin(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_STDIN:
        raise CNIError(ErrorCode.DECODE_FAILURE, f"network config is larger than {MAX_STDIN} bytes")
    try:
        conf = jsonfast.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # or nested too deep
        raise CNIError(
            ErrorCode.DECODE_FAILURE, f"network config is not valid JSON: {exc}"
        ) from None
    if not isinstance(conf, dict):
        raise CNIError(ErrorCode.DECODE_FAILURE, "network config must be a JSON object")
    return conf


def _requested_version(conf: Mapping[str, Any]) -> str:
    version = conf.get("cniVersion")
    supported = ", ".join(SUPPORTED_VERSIONS)
    if version is None:
        raise CNIError(
            ErrorCode.INCOMPATIBLE_VERSION, "cniVersion is missing", f"supported: {supported}"
        )
    if not isinstance(version, str) or not is_supported(version):
        raise CNIError(
            ErrorCode.INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported",
            f"supported: {supported}",
        )
    return version


def _version_answer(data: bytes) -> dict[str, Any]:
    requested = LATEST
    if data.strip():
        conf = _decode_stdin(data)
        raw = conf.get("cniVersion")
        if isinstance(raw, str) and raw:
            requested = raw
    return {"cniVersion": requested, "supportedVersions": list(SUPPORTED_VERSIONS)}


def _build_env(command: str, env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"path": env.get("CNI_PATH", "")}
    if command in ("ADD", "DEL", "CHECK"):
        from ..cni.names import validate_container_id, validate_ifname

        cid = env.get("CNI_CONTAINERID", "")
        validate_container_id(cid)
        out["containerId"] = cid
        ifname = env.get("CNI_IFNAME", "")
        validate_ifname(ifname)
        out["ifname"] = ifname
        netns = env.get("CNI_NETNS", "")
        if command != "DEL":
            netns = _need(env, "CNI_NETNS")
        if netns and not lean_os.isabs(netns):
            raise CNIError(ErrorCode.INVALID_ENV, f"CNI_NETNS {netns!r} must be an absolute path")
        out["netns"] = netns
        out["args"] = parse_cni_args(env.get("CNI_ARGS", ""))
        _need(env, "CNI_PATH")
    elif command == "GC":
        _need(env, "CNI_PATH")
    return out


def _agent_socket(conf: Mapping[str, Any], role: str) -> str:
    """The agent socket: top-level agentSocket, else (as IPAM) the ipam section's agentSocket
    or the reference dhcp plugin's daemonSocketPath, else the default."""
    key, path = "agentSocket", conf.get("agentSocket")
    if path is None and role == "ipam":
        ipam = conf["ipam"]
        key = "ipam.agentSocket" if "agentSocket" in ipam else "ipam.daemonSocketPath"
        path = ipam.get("agentSocket", ipam.get("daemonSocketPath"))
    if path is None:
        from ..cni.defaults import DEFAULT_SOCKET

        return DEFAULT_SOCKET
    if not isinstance(path, str) or not lean_os.isabs(path):
        raise CNIError(ErrorCode.INVALID_CONFIG, f"{key} {path!r} must be an absolute path")
    return path


def _validate_name(conf: Mapping[str, Any]) -> None:
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise CNIError(ErrorCode.INVALID_CONFIG, "name is missing from the network config")
    from ..cni.names import valid_cni_name

    if not valid_cni_name(name):
        raise CNIError(ErrorCode.INVALID_CONFIG, f"name {name!r} is not a valid network name")


DEFAULT_NAME = "cni-bridge-dhcp"


def executable_name(argv0: str) -> str:
    """The name the runtime exec'd us by (what a config's type or ipam.type refers to)."""
    name = lean_os.basename(argv0)
    if not name or name.endswith(".py") or name.startswith("python"):
        return DEFAULT_NAME
    return name


def role_for(conf: Mapping[str, Any], name: str) -> str:
    """ "ipam" when exec'd as another plugin's IPAM (macvlan, ipvlan...), else "main"."""
    ipam = conf.get("ipam")
    if conf.get("type") != name and isinstance(ipam, dict) and ipam.get("type") == name:
        return "ipam"
    return "main"


def dispatch(
    env: Mapping[str, str],
    stdin: bytes,
    *,
    call: Caller | None = None,
    name: str = DEFAULT_NAME,
) -> dict[str, Any] | None:
    """Run one CNI command; return the JSON to print (None: print nothing).

    ``call`` defaults to the agent client's: it is imported only past VERSION.
    """
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(ErrorCode.INVALID_ENV, "CNI_COMMAND is not set")
    if command not in COMMANDS:
        raise CNIError(
            ErrorCode.INVALID_ENV,
            f"CNI_COMMAND {command!r} is not supported",
            f"expected one of {', '.join(COMMANDS)}",
        )
    if command == "VERSION":
        return _version_answer(stdin)
    conf = _decode_stdin(stdin)
    version = _requested_version(conf)
    minimum = _MIN_VERSION.get(command)
    if minimum and version_tuple(version) < minimum:
        raise CNIError(
            ErrorCode.INCOMPATIBLE_VERSION,
            f"{command} is not supported by cniVersion {version}",
            f"{command} needs cniVersion {'.'.join(map(str, minimum))} or later",
        )
    _validate_name(conf)
    from ..cni import agent_client as client
    from ..cni.wire import make_request

    req_env = _build_env(command, env)
    role = role_for(conf, name)
    socket_path = _agent_socket(conf, role)
    netns_fd = client.open_netns_path(req_env.get("netns", ""))
    try:
        request = make_request(command, version, req_env, conf, netns_fd is not None, role)
        try:
            result = (call or client.call)(
                socket_path,
                request,
                netns_fd=netns_fd,
                response_timeout=client.response_timeout_for(conf),
            )
        except client.AgentUnavailable as exc:
            if command == "STATUS":
                raise CNIError(ErrorCode.STATUS_UNAVAILABLE, exc.msg, exc.details) from None
            raise
    finally:
        if netns_fd is not None:
            lean_os.close(netns_fd)
    if command == "ADD":
        return convert(result, version)
    return None


def _error_version(stdin: bytes) -> str:
    try:
        raw = jsonfast.loads(stdin.decode("utf-8")).get("cniVersion")
    except Exception:  # the error funnel must never fail on odd input
        return LATEST
    return raw if isinstance(raw, str) and is_supported(raw) else LATEST


def main(
    env: Mapping[str, str],
    stdin: bytes,
    stdout: TextIO,
    *,
    call: Caller | None = None,
    name: str = DEFAULT_NAME,
) -> int:
    """The error funnel: every outcome becomes JSON on stdout and an exit code."""
    try:
        out = dispatch(env, stdin, call=call, name=name)
    except CNIError as err:
        stdout.write(jsonfast.dumps(err.to_dict(_error_version(stdin))))
        stdout.write("\n")
        stdout.flush()
        return 1
    except Exception as exc:
        import traceback  # only on the failure path: keep the exec path's imports small

        sys.stderr.write("cni-bridge-dhcp: unexpected plugin failure\n")
        traceback.print_exc(file=sys.stderr)
        internal = CNIError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        stdout.write(jsonfast.dumps(internal.to_dict(_error_version(stdin))))
        stdout.write("\n")
        stdout.flush()
        return 1
    if out is not None:
        stdout.write(jsonfast.dumps(out))
        stdout.write("\n")
        stdout.flush()
    return 0


def plugin_main(env: Mapping[str, str]) -> int:
    data = sys.stdin.buffer.read(MAX_STDIN + 1)
    return main(env, data, sys.stdout, name=executable_name(sys.argv[0]))
