"""The plugin <-> agent wire protocol (version 1). Standard library only.

Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON. One request and
one response per connection. The request may carry one file descriptor (SCM_RIGHTS): an
open fd of CNI_NETNS, which pins the namespace against path races.

Request::

    {"v": 1, "op": "ADD"|"DEL"|"CHECK"|"GC"|"STATUS"|"PING"|"REPORT",
     "cniVersion": "1.0.0",
     "env": {"containerId": str, "netns": str, "ifname": str, "path": str,
             "args": {str: str}},
     "config": {...network config as given on stdin...},
     "netnsFd": bool,
     "role": "main"|"ipam"}      # optional; "ipam" when run as another plugin's IPAM

Response::

    {"v": 1, "ok": true, "result": {...internal 1.1.0 result, or {} ...}}
    {"v": 1, "ok": false, "error": {"code": int, "msg": str, "details": str}}

Unknown top-level or env fields, a wrong version, or a message over MAX_MESSAGE bytes are
rejected (code 6) without running anything.
"""

from __future__ import annotations

import struct

from . import jsonfast
from .errors import CNIError, ErrorCode

TYPE_CHECKING = False  # not typing's: the plugin's exec path does not import typing (~1 ms)
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20
HEADER = struct.Struct(">I")

OPS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "PING", "REPORT")
_REQUEST_KEYS = {"v", "op", "cniVersion", "env", "config", "netnsFd", "role"}
ROLES = ("main", "ipam")
_ENV_KEYS = {"containerId", "netns", "ifname", "path", "args"}
_RESPONSE_KEYS = {"v", "ok", "result", "error"}


def frame(message: dict[str, Any]) -> bytes:
    body = jsonfast.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise CNIError(ErrorCode.IO_FAILURE, f"message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_MESSAGE:
        raise CNIError(
            ErrorCode.DECODE_FAILURE, f"message of {length} bytes exceeds limit {MAX_MESSAGE}"
        )
    return int(length)


def _decode_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = jsonfast.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # or nested too deep
        raise CNIError(ErrorCode.DECODE_FAILURE, f"{what}: invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CNIError(ErrorCode.DECODE_FAILURE, f"{what}: expected a JSON object")
    return obj


def make_request(
    op: str,
    cni_version: str,
    env: dict[str, Any],
    config: dict[str, Any],
    netns_fd: bool,
    role: str = "main",
) -> dict[str, Any]:
    req = {
        "v": PROTOCOL_VERSION,
        "op": op,
        "cniVersion": cni_version,
        "env": env,
        "config": config,
        "netnsFd": netns_fd,
    }
    if role != "main":
        req["role"] = role
    return req


def parse_request(body: bytes) -> dict[str, Any]:
    req = _decode_object(body, "request")
    unknown = set(req) - _REQUEST_KEYS
    if unknown:
        raise CNIError(ErrorCode.DECODE_FAILURE, f"request: unknown field {sorted(unknown)[0]!r}")
    if req.get("v") != PROTOCOL_VERSION:
        raise CNIError(
            ErrorCode.INCOMPATIBLE_VERSION,
            f"request: protocol version {req.get('v')!r} not supported (agent speaks {PROTOCOL_VERSION})",
        )
    if req.get("op") not in OPS:
        raise CNIError(ErrorCode.DECODE_FAILURE, f"request: unknown op {req.get('op')!r}")
    env = req.get("env", {})
    if not isinstance(env, dict):
        raise CNIError(ErrorCode.DECODE_FAILURE, "request: env must be an object")
    unknown = set(env) - _ENV_KEYS
    if unknown:
        raise CNIError(
            ErrorCode.DECODE_FAILURE, f"request: unknown env field {sorted(unknown)[0]!r}"
        )
    for key in ("containerId", "netns", "ifname", "path"):
        if not isinstance(env.get(key, ""), str):
            raise CNIError(ErrorCode.DECODE_FAILURE, f"request: env.{key} must be a string")
    args = env.get("args", {})
    if not isinstance(args, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in args.items()
    ):
        raise CNIError(ErrorCode.DECODE_FAILURE, "request: env.args must map strings to strings")
    if not isinstance(req.get("config", {}), dict):
        raise CNIError(ErrorCode.DECODE_FAILURE, "request: config must be an object")
    if not isinstance(req.get("cniVersion", ""), str):
        raise CNIError(ErrorCode.DECODE_FAILURE, "request: cniVersion must be a string")
    if req.get("role", "main") not in ROLES:
        raise CNIError(ErrorCode.DECODE_FAILURE, f"request: unknown role {req.get('role')!r}")
    if not isinstance(req.get("netnsFd", False), bool):
        raise CNIError(ErrorCode.DECODE_FAILURE, "request: netnsFd must be a boolean")
    return req


def ok_response(result: dict[str, Any] | None) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": True, "result": result or {}}


def error_response(err: CNIError) -> dict[str, Any]:
    return {
        "v": PROTOCOL_VERSION,
        "ok": False,
        "error": {"code": err.code, "msg": err.msg, "details": err.details},
    }


def parse_response(body: bytes) -> dict[str, Any]:
    """Returns the result dict, or raises the agent's error as a CNIError."""
    resp = _decode_object(body, "agent response")
    if set(resp) - _RESPONSE_KEYS or resp.get("v") != PROTOCOL_VERSION:
        raise CNIError(ErrorCode.IO_FAILURE, "agent response: unexpected format or version")
    if resp.get("ok") is True:
        result = resp.get("result", {})
        if not isinstance(result, dict):
            raise CNIError(ErrorCode.IO_FAILURE, "agent response: result must be an object")
        return result
    err = resp.get("error")
    if not isinstance(err, dict) or not isinstance(err.get("code"), int):
        raise CNIError(ErrorCode.IO_FAILURE, "agent response: malformed error")
    raise CNIError(err["code"], str(err.get("msg", "")), str(err.get("details", "")))
