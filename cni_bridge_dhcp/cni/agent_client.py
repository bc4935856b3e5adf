"""Plugin side of the agent socket: one request, one response, bounded in time.

Standard library only.
"""

from __future__ import annotations

# _socket, not socket: the socket module wraps the same type in Python and builds its
# AddressFamily/SocketKind enums at import (with selectors), a few ms on every exec.
import _socket
import struct

from . import lean_os
from .errors import CNIError, ErrorCode
from .wire import HEADER, frame, frame_length, parse_response

TYPE_CHECKING = False  # not typing's: the plugin's exec path does not import typing (~1 ms)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

CONNECT_TIMEOUT = 5.0
# ADD waits for a DHCP exchange (bounded by ipam.timeout, 30 s by default, at most 600 s)
# plus the rest: a queued operation on the same pod, the uplink takeover and its gateway
# check, the ARP probe, the firewall. The plugin waits for ipam.timeout plus this margin,
# so it never gives up on an ADD the agent is still allowed to finish.
DEFAULT_IPAM_TIMEOUT = 30.0
RESPONSE_MARGIN = 90.0
RESPONSE_TIMEOUT = DEFAULT_IPAM_TIMEOUT + RESPONSE_MARGIN
MAX_IPAM_TIMEOUT = 600.0  # agent/config.py IPAMConf.timeout (le=600); a unit test ties them

START_HINT = (
    "start the agent with `cni-bridge-dhcp daemon` (or `systemctl start "
    "cni-bridge-dhcp.socket`, or deploy the DaemonSet)"
)


class AgentUnavailable(CNIError):
    pass


def response_timeout_for(conf: Mapping[str, Any]) -> float:
    """How long to wait for the agent's answer: the config's ipam.timeout plus the margin.

    A missing or invalid value gets the default wait: the agent refuses it (code 7)
    quickly, naming the key.
    """
    ipam = conf.get("ipam")
    timeout = ipam.get("timeout") if isinstance(ipam, dict) else None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):  # 3.9: no int | float
        return RESPONSE_TIMEOUT
    if not 0 < timeout <= MAX_IPAM_TIMEOUT:
        return RESPONSE_TIMEOUT
    return max(RESPONSE_TIMEOUT, float(timeout) + RESPONSE_MARGIN)


def _recv_exact(sock: _socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise CNIError(ErrorCode.IO_FAILURE, "agent closed the connection mid-response")
        chunks.extend(chunk)
    return bytes(chunks)


def call(
    socket_path: str,
    request: dict[str, Any],
    *,
    netns_fd: int | None = None,
    response_timeout: float = RESPONSE_TIMEOUT,
) -> dict[str, Any]:
    """Send ``request`` to the agent and return its result (or raise its CNIError)."""
    data = frame(request)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(socket_path)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise AgentUnavailable(
                ErrorCode.TRY_AGAIN_LATER,
                f"cni-bridge-dhcp agent is not reachable at {socket_path}: {reason}",
                START_HINT,
            ) from None
        try:
            sock.settimeout(response_timeout)
            try:
                if netns_fd is not None:
                    # one native int, as array("i", [fd]) would pack it; the array
                    # module imports collections.abc (~1.5 ms) just to register itself
                    fds = struct.pack("i", netns_fd)
                    sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
                    if sent < len(data):
                        sock.sendall(data[sent:])
                else:
                    sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                # A busy agent answers "try again" and closes without reading the whole
                # request: its answer is still there to read.
                pass
            length = frame_length(_recv_exact(sock, HEADER.size))
            body = _recv_exact(sock, length)
        except TimeoutError:
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER,
                f"cni-bridge-dhcp agent at {socket_path} did not answer within {response_timeout:.0f} s",
            ) from None
        except OSError as exc:
            raise CNIError(
                ErrorCode.IO_FAILURE,
                f"talking to the cni-bridge-dhcp agent at {socket_path} failed: {exc.strerror or exc}",
            ) from None
    finally:
        sock.close()
    return parse_response(body)


def open_netns_path(path: str) -> int | None:
    """Open CNI_NETNS for passing to the agent; None if it cannot be opened here."""
    if not path:
        return None
    try:
        # Only regular files can be nsfs bind mounts; never open devices or FIFOs.
        return lean_os.open_regular_file(path)
    except OSError:
        return None
