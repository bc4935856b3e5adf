"""A small ctypes binding of libnftables (``libnftables.so.1``), JSON in and out.

Debian's python3-nftables is not importable from a venv, so we bind the five C calls we
need. One context per process, serialised by a lock (an ``nft_ctx`` is not thread-safe).
The context's netlink socket lives in the namespace of the thread that first runs a
command; callers make sure that is the agent's own namespace (see ``ensure_process_netns``).
Every ``run`` is one netlink batch: all of its commands apply or none do.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
from typing import Any

from ...cni.errors import CNIError, ErrorCode

log = logging.getLogger(__name__)

SONAME = "libnftables.so.1"
_OUTPUT_HANDLE = 1 << 3
_OUTPUT_JSON = 1 << 4

JsonObj = dict[str, Any]


class NftUnavailable(RuntimeError):
    """libnftables cannot be loaded on this host."""


def ensure_process_netns() -> None:
    """Refuse to touch the firewall from a thread that setns()'d elsewhere.

    A netlink socket (libnftables, libiptc) or a forked child (iptables-nft-restore) gets
    the namespace of the calling *thread*; a pod-namespace thread would write the pod's
    firewall.
    """
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        cur = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:  # no /proc: nothing to compare, nothing else would work either
        return
    if own != cur:
        raise CNIError(
            ErrorCode.INTERNAL,
            "firewall called from a thread outside the agent's network namespace",
        )


class Nft:
    """A libnftables context that speaks JSON."""

    def __init__(self, soname: str = SONAME) -> None:
        try:
            lib = ctypes.CDLL(soname)
        except OSError as exc:
            raise NftUnavailable(f"cannot load {soname}: {exc}") from exc
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._lock = threading.Lock()
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise NftUnavailable("nft_ctx_new failed")
        self._ctx = ctypes.c_void_p(ctx)
        # JSON output also switches nft_run_cmd_from_buffer to accept JSON input.
        lib.nft_ctx_output_set_flags(self._ctx, _OUTPUT_JSON | _OUTPUT_HANDLE)
        if lib.nft_ctx_buffer_output(self._ctx) or lib.nft_ctx_buffer_error(self._ctx):
            raise NftUnavailable("cannot buffer libnftables output")

    def run(self, cmds: list[JsonObj]) -> JsonObj:
        """Run a batch of JSON commands; raise CNIError naming the failure."""
        return self._run_text(json.dumps({"nftables": cmds}))

    def list_ruleset(self) -> list[JsonObj]:
        return self.list({"ruleset": None})

    def list(self, what: JsonObj) -> list[JsonObj]:
        """The items one ``list`` command prints (``{"chains": None}``, ``{"table": ...}``).
        One command per call: libnftables 1.0.6 fails a buffer holding two of them."""
        out = self._run_text(json.dumps({"nftables": [{"list": what}]}))
        items = out.get("nftables", [])
        return items if isinstance(items, list) else []

    def _run_text(self, text: str) -> JsonObj:
        ensure_process_netns()
        with self._lock:
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise CNIError(
                ErrorCode.FIREWALL_FAILED,
                f"nftables: {first_line(err) or 'command failed'}",
                f"libnftables rc={rc}; input: {text[:2000]}",
            )
        if not out.strip():
            return {}
        try:
            parsed = json.loads(out)
        except ValueError as exc:
            raise CNIError(ErrorCode.FIREWALL_FAILED, "nftables: unparseable JSON output") from exc
        return parsed if isinstance(parsed, dict) else {}


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


_shared: Nft | None = None
_shared_lock = threading.Lock()


def shared() -> Nft:
    """The process-wide context (created on first use; raises NftUnavailable)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Nft()
            log.debug("libnftables loaded from %s", SONAME)
        return _shared
