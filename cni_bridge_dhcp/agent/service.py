"""The agent's long-lived state and request routing.

Blocking netlink and firewall work runs in worker threads (which always stay in the
node's namespace); DHCP runs on the event loop. Operations on one attachment are
serialised; bridge/uplink setup and firewall changes are serialised node-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..cni.errors import CNIError, ErrorCode
from ..cni.names import validate_container_id, validate_ifname
from . import status
from .commands import ipam_role, main_role
from .commands.common import teardown
from .commands.lease6_follow import on_lease6_change
from .commands.lease_follow import on_lease_change
from .commands.node_lease import NodeLeaseSupervisor
from .commands.types import Datapath, Request
from .commands.vanished import reap_vanished
from .config import NetConf
from .datapath.bridge import BridgeSpec, ensure_bridge
from .datapath.netlink import netns_ipr
from .datapath.rtnl import Rtnl
from .datapath.vethreaper import VethReaper
from .dhcp import LeaseManager
from .dhcp.manager import default_node_transports
from .dhcp.node_release import BridgeSender
from .dhcp.v6.manager import Lease6Manager
from .firewall import enable_forwarding
from .firewall.registry import FirewallRegistry
from .runtime.fdlimits import is_fd_exhaustion
from .runtime.keylock import KeyedLocks
from .state.addressbook import AddressBook
from .state.attachments import AttachmentState, AttachmentStore, attachment_key
from .uplink import current_state, ensure_uplink, recover
from .uplink.plan import select_uplink
from .uplink.watch import UplinkWatcher

log = logging.getLogger(__name__)

Handler = Callable[["Agent", Request], Awaitable[dict[str, Any]]]

_HANDLERS: dict[str, Handler] = {
    "ADD": main_role.cmd_add,
    "DEL": main_role.cmd_del,
    "CHECK": main_role.cmd_check,
    "GC": main_role.cmd_gc,
    "STATUS": main_role.cmd_status,
}
_IPAM_HANDLERS: dict[str, Handler] = dict(ipam_role.HANDLERS)


def _datapath_key(conf: NetConf) -> tuple[BridgeSpec, str | None]:
    spec = BridgeSpec(
        name=conf.bridge,
        mtu=conf.mtu,
        promisc=conf.promisc_mode,
        vlan_filtering=bool(conf.vlan or conf.vlan_trunk),
        preserve_default_vlan=conf.preserve_default_vlan,
    )
    return spec, conf.uplink_interface


class Agent:
    def __init__(
        self,
        state_dir: Path,
        *,
        firewall_interval: float = 60.0,
        cleanup_interval: float = 60.0,
    ) -> None:
        self.state_dir = state_dir
        self.cleanup_interval = cleanup_interval
        self.store = AttachmentStore(state_dir)
        self.addressbook = AddressBook(state_dir)
        self.firewall_interval = firewall_interval
        self.firewall = FirewallRegistry(self.store)
        self.veths = VethReaper()
        self._leases: LeaseManager | None = None
        self._leases6: Lease6Manager | None = None
        self._locks = KeyedLocks()
        self._setup_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._forwarding_done = False
        self._datapaths: dict[tuple[BridgeSpec, str | None], Datapath] = {}
        self._uplink_watch: UplinkWatcher | None = None
        self.node_lease = NodeLeaseSupervisor(state_dir, on_change=self._datapaths.clear)

    # ------------------------------------------------------------ lifecycle

    @property
    def leases(self) -> LeaseManager:
        if self._leases is None:
            raise CNIError(ErrorCode.TRY_AGAIN_LATER, "the agent is still starting")
        return self._leases

    @property
    def leases6(self) -> Lease6Manager:
        if self._leases6 is None:
            raise CNIError(ErrorCode.TRY_AGAIN_LATER, "the agent is still starting")
        return self._leases6

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="agent"))
        outcome = await asyncio.to_thread(recover, self.state_dir)
        if outcome:
            log.warning("uplink journal recovery: %s", outcome)
        # A re-created uplink goes back into its bridge without waiting for an ADD.
        self._uplink_watch = UplinkWatcher(self.state_dir)
        self._uplink_watch.start()
        self._leases = LeaseManager(
            self.state_dir,
            on_change=functools.partial(on_lease_change, self),
            node_transports=default_node_transports,
            bridge_sender=BridgeSender(),
        )
        await self._leases.start()
        self._leases6 = Lease6Manager(
            self.state_dir, on_change=functools.partial(on_lease6_change, self)
        )
        await self._leases6.start()
        await self.node_lease.ensure()  # re-adopt the node's own DHCP lease, if any
        for att in self.store.all():
            if att.state != AttachmentState.READY:
                log.warning("cleaning up interrupted ADD of %s", att.key)
                try:
                    await teardown(self, att, None, None)
                except Exception:
                    log.exception("cleanup of interrupted ADD %s failed", att.key)
        await reap_vanished(self)
        # Re-adopted pods' rules now, before the socket is bound: the node's firewall may have
        # been reloaded (or switched to DROP) while we were down, and the periodic re-assertion
        # would leave their traffic dropped for a whole interval.
        try:
            restored = await self.firewall.reassert()
            if restored:
                log.warning("firewall rules restored at start: %s", ", ".join(restored))
        except Exception:
            log.exception("firewall re-assertion at start failed")
        if self.firewall_interval > 0:
            self._tasks.append(
                asyncio.create_task(self.firewall.reassert_every(self.firewall_interval))
            )
        if self.cleanup_interval > 0:
            self._tasks.append(asyncio.create_task(self._cleanup_loop()))

    async def cleanup_pending(self) -> int:
        """Tear down pending records no operation is working on: ADDs whose undo failed
        (e.g. out of file descriptors) left them, with whatever they had made. Returns how
        many were finished; one that fails again stays for the next sweep."""
        finished = 0
        for att in self.store.all():
            if att.state == AttachmentState.READY or self._locks.busy(att.key):
                continue
            async with self._locks.hold(att.key):
                current = self.store.get(att.key)
                if current is None or current.state == AttachmentState.READY:
                    continue  # an operation finished it meanwhile
                log.warning("cleaning up half-made ADD of %s", att.key)
                try:
                    await teardown(self, current, None, None)
                except Exception as exc:
                    log.warning("cleanup of half-made ADD %s incomplete: %s", att.key, exc)
                    continue
                finished += 1
        return finished

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            try:
                await self.cleanup_pending()
            except Exception:
                log.exception("periodic cleanup of half-made ADDs failed")

    async def close(self) -> None:
        if self._uplink_watch is not None:
            await asyncio.to_thread(self._uplink_watch.stop)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._leases is not None:
            await self._leases.close()
        if self._leases6 is not None:
            await self._leases6.close()
        await self.node_lease.close()

    # ------------------------------------------------------------ requests

    async def handle(self, req: dict[str, Any], netns_fd: int | None) -> dict[str, Any]:
        op = req["op"]
        if op == "PING":
            if netns_fd is not None:
                os.close(netns_fd)
            return {"pong": True}
        if op == "REPORT":
            return await status.report(self.state_dir, self.store, self._leases, self.firewall)
        env = req.get("env", {})
        conf = req.get("config", {})
        r = Request(
            op=op,
            cni_version=req.get("cniVersion", ""),
            container_id=env.get("containerId", ""),
            netns=env.get("netns", ""),
            ifname=env.get("ifname", ""),
            cni_path=env.get("path", ""),
            args=dict(env.get("args", {})),
            raw=conf,
            netns_fd=netns_fd,
            role="ipam" if req.get("role") == "ipam" else "main",
        )
        started = time.monotonic()
        try:
            result = await self._dispatch(op, r, conf)
        except CNIError as err:
            _log_op(r, started, f"failed: code {err.code}: {err.msg}", logging.WARNING)
            raise
        except Exception as exc:
            if is_fd_exhaustion(exc):  # answered 11 by the server: transient, not a bug
                _log_op(r, started, f"failed: out of file descriptors: {exc}", logging.WARNING)
                raise
            _log_op(r, started, f"failed: internal error {type(exc).__name__}", logging.ERROR)
            raise
        _log_op(r, started, _outcome(result))
        return result

    async def _dispatch(self, op: str, r: Request, conf: dict[str, Any]) -> dict[str, Any]:
        try:
            if op in ("ADD", "DEL", "CHECK"):
                _validate_ids(r)
                key = attachment_key(str(conf.get("name", "")), r.container_id, r.ifname)
                handler = _IPAM_HANDLERS[op] if r.role == "ipam" else _HANDLERS[op]
                async with self._locks.hold(key):
                    return await handler(self, r)
            return await _HANDLERS[op](self, r)
        finally:
            # The fd the plugin passed, unless a handler took it (commands.common.pod_netns).
            if r.netns_fd is not None:
                os.close(r.netns_fd)

    # ------------------------------------------------------------ datapath

    async def ensure_datapath(self, conf: NetConf) -> Datapath:
        # The usual ADD finds it set up: two link reads (~0.1 ms) on the loop cost less than
        # a trip to a worker thread and back.
        datapath = self._cached_datapath(conf)
        if datapath is None:
            datapath = await asyncio.to_thread(self._ensure_datapath, conf)
        if conf.uplink_interface:
            await self.node_lease.ensure()  # a takeover of a DHCP-leased node address
        return datapath

    def _cached_datapath(self, conf: NetConf) -> Datapath | None:
        cached = self._datapaths.get(_datapath_key(conf))
        if cached is not None and self._still_valid(cached, conf.bridge):
            return cached
        return None

    def _ensure_datapath(self, conf: NetConf) -> Datapath:
        cached = self._cached_datapath(conf)
        if cached is not None:
            return cached
        key = _datapath_key(conf)
        spec = key[0]
        with self._setup_lock:
            node_ip: ipaddress.IPv4Address | None = None
            uplink: str | None = None
            lan_ras = False
            if conf.uplink_interface:
                state = ensure_uplink(spec, conf.uplink_interface, self.state_dir)
                node_ip, uplink, lan_ras = state.node_ipv4, state.uplink, state.lan_ras
            else:
                ensure_bridge(spec)
            if not self._forwarding_done:
                enable_forwarding(False)
                self._forwarding_done = True
        with netns_ipr(None) as ipr:
            index = ipr.link_lookup(ifname=conf.bridge)[0]
            link = ipr.get_links(index)[0]
            if node_ip is None:
                for addr in ipr.get_addr(index=index, family=2):
                    node_ip = ipaddress.IPv4Address(addr.get("address"))
                    break
            datapath = Datapath(
                bridge_index=index,
                bridge_mac=link.get("address"),
                node_ip=node_ip,
                uplink=uplink,
                mtu=int(link.get("mtu")),
                lan_ras=lan_ras,
            )
        self._datapaths[key] = datapath
        return datapath

    def _still_valid(self, datapath: Datapath, bridge: str) -> bool:
        """Cheap re-check of a datapath set up earlier: same bridge, uplink still its port.

        The full ensure (journal, lock, snapshot comparison) costs tens of ms and is
        serialised node-wide; a burst of ADDs would queue behind it for nothing.
        """
        with Rtnl() as rt:  # raw: runs on every ADD (rtnl.py)
            found = rt.get_link(name=bridge)
            if found is None or found.index != datapath.bridge_index:
                return False
            if datapath.uplink is None:
                return True
            port = rt.get_link(name=datapath.uplink)
            return port is not None and port.master == datapath.bridge_index

    async def bridge_index(self, name: str) -> int | None:
        def lookup() -> int | None:
            with netns_ipr(None) as ipr:
                found = ipr.link_lookup(ifname=name)
                return found[0] if found else None

        return await asyncio.to_thread(lookup)

    async def uplink_problem(
        self, conf: NetConf, *, before_takeover_ok: bool = False
    ) -> str | None:
        def check() -> str | None:
            state = current_state(self.state_dir)
            with netns_ipr(None) as ipr:
                if state is None:
                    if not before_takeover_ok:
                        return f"uplink {conf.uplink_interface} has not been taken over"
                    links = [(link["index"], link.get("ifname")) for link in ipr.get_links()]
                    try:
                        select_uplink(conf.uplink_interface or "", links, exclude=[conf.bridge])
                    except CNIError as exc:
                        return exc.msg
                    return None
                found = ipr.link_lookup(ifname=state.uplink)
                if not found:
                    return f"uplink {state.uplink} is missing"
                master = ipr.get_links(found[0])[0].get("master")
                bridge = ipr.link_lookup(ifname=state.bridge)
                if not bridge or master != bridge[0]:
                    return f"uplink {state.uplink} is not enslaved to {state.bridge}"
            return None

        return await asyncio.to_thread(check)


def _outcome(result: dict[str, Any]) -> str:
    ips = [ip.get("address", "?") for ip in result.get("ips", [])]
    return "ok" + (f": {', '.join(ips)}" if ips else "")


def _log_op(r: Request, started: float, outcome: str, level: int = logging.INFO) -> None:
    """One line per operation: what, which pod, how long, how it ended (kubelet hides stderr)."""
    log.log(
        level,
        "%s%s %s pod=%s/%s if=%s %s in %.3f s",
        r.op,
        " (ipam)" if r.role == "ipam" else "",
        r.container_id or "-",
        r.args.get("K8S_POD_NAMESPACE", "-"),
        r.args.get("K8S_POD_NAME", "-"),
        r.ifname or "-",
        outcome,
        time.monotonic() - started,
    )


def _validate_ids(r: Request) -> None:
    # The plugin validated these too; the agent does not trust its socket peers blindly.
    validate_container_id(r.container_id)
    validate_ifname(r.ifname)
