"""Steps both roles (main_role: our own veth; ipam_role: an interface another plugin made)
share: the pod's netns, the DHCP identity and lease, static routes, DNS, the record, and
the teardown DEL, GC and the cleanups run."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Iterator
from typing import Any

from ...cni.errors import CNIError, ErrorCode
from ..config import IPAMConf, NetConf, RouteConf
from ..datapath.netns import netns_inode, open_netns, validate_netns_fd
from ..datapath.podroutes import PodRoute
from ..dhcp import Lease, LeaseRequest, client_id_for
from ..dhcp.identity import dns_label, option_code
from ..state.attachments import Attachment, Role
from .delegate import exec_ipam
from .types import Request, Services

log = logging.getLogger(__name__)


def open_pod_netns(req: Request, *, required: bool) -> int | None:
    """The pod netns fd (passed by the plugin, else opened by path); None if gone and not
    required. The caller owns the fd: it is taken out of ``req``."""
    if req.netns_fd is not None:
        fd, req.netns_fd = req.netns_fd, None
        return validate_netns_fd(fd, req.netns)
    if not req.netns:
        if required:
            raise CNIError(ErrorCode.INVALID_ENV, "CNI_NETNS is not set")
        return None
    try:
        return open_netns(req.netns)
    except FileNotFoundError:
        if required:
            raise CNIError(
                ErrorCode.INVALID_ENV, f"CNI_NETNS {req.netns!r} does not exist"
            ) from None
        return None


@contextlib.contextmanager
def pod_netns(req: Request) -> Iterator[int]:
    """The pod's netns fd for the ``with`` block (CNIError 4 if there is none); closed after.

    The one owner of the fd the plugin passed: ``_dispatch`` closes only what no handler took.
    """
    fd = open_pod_netns(req, required=True)
    assert fd is not None
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def pod_netns_if_there(req: Request) -> Iterator[int | None]:
    """As ``pod_netns``, but None when the namespace is gone (DEL of a deleted pod)."""
    fd = open_pod_netns(req, required=False)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def pod_ids(req: Request) -> tuple[str | None, str | None]:
    """The pod's namespace and name from CNI_ARGS (None when the runtime sent none)."""
    return req.args.get("K8S_POD_NAMESPACE") or None, req.args.get("K8S_POD_NAME") or None


def new_attachment(
    req: Request,
    network: str,
    netns_fd: int,
    *,
    bridge: str = "",
    host_veth: str = "",
    ipam: str = "",
    mac: str = "",
    uplink: str | None = None,
    role: Role = "main",
) -> Attachment:
    """The pending record an ADD writes before it makes anything."""
    return Attachment(
        network=network,
        container_id=req.container_id,
        ifname=req.ifname,
        netns=req.netns,
        netns_inode=netns_inode(netns_fd),
        bridge=bridge,
        host_veth=host_veth,
        mac=mac,
        ipam=ipam,
        pod_namespace=req.args.get("K8S_POD_NAMESPACE", ""),
        pod_name=req.args.get("K8S_POD_NAME", ""),
        uplink=uplink,
        role=role,
        created=time.time(),
    )


def static_routes(routes: list[RouteConf]) -> tuple[PodRoute, ...]:
    """The routes ``ipam.routes`` adds to what the lease (or delegate) gives."""
    return tuple(
        PodRoute(
            ipaddress.ip_network(r.dst, strict=False), ipaddress.ip_address(r.gw) if r.gw else None
        )
        for r in routes
    )


def lease_dns(lease: Lease) -> dict[str, Any]:
    """The CNI result's dns section from a lease (empty values still in)."""
    return {
        "nameservers": [str(s) for s in lease.dns_servers],
        "domain": lease.domain or "",
        "search": list(lease.search),
    }


async def delegate_ipam(
    command: str, ipam_type: str, req: Request, *, in_pod: bool = True
) -> dict[str, Any]:
    """Run the delegated IPAM plugin for this request (``in_pod``: its netns still exists)."""
    return await exec_ipam(
        command,
        ipam_type,
        req.raw,
        container_id=req.container_id,
        netns=req.netns if in_pod else "",
        ifname=req.ifname,
        cni_args=req.cni_args,
        cni_path=req.cni_path,
    )


def lease_request(
    ipam: IPAMConf,
    req: Request,
    network: str,
    key: str,
    netns_fd: int,
    mac: str,
    client_id: bytes,
    prefer: ipaddress.IPv4Address | None = None,
    bridge: str = "",
) -> LeaseRequest:
    """The DHCP client's request for one attachment, identity derived from the pod
    (``client_id``: the one claim_identity chose)."""
    pod_ns, pod_name = pod_ids(req)
    provide: list[tuple[int, bytes]] = []
    for p in ipam.provide:
        code = option_code(p.option, "ipam.provide")
        value = req.args.get(p.from_arg, "") if p.from_arg else (p.value or "")
        if value:
            provide.append((code, value.encode()))
    return LeaseRequest(
        key=key,
        netns_path=req.netns,
        netns_fd=netns_fd,
        ifname=req.ifname,
        mac=mac,
        client_id=client_id,
        client_id_mode=ipam.client_id,
        prefer_address=prefer,
        hostname=dns_label(pod_name),
        extra_request=tuple(option_code(r.option, "ipam.request") for r in ipam.request),
        provide=tuple(provide),
        timeout=ipam.timeout,
        server_allow_list=tuple(ipam.server_allow_list),
        server_macs=tuple(ipam.server_macs.items()),
        arp_probe_wait=ipam.arp_probe_wait,
        meta={
            "network": network,
            "containerId": req.container_id,
            "podNamespace": pod_ns or "",
            "podName": pod_name or "",
            # where a RELEASE for a pod that is gone is sent from (dhcp/node_release.py)
            **({"bridge": bridge} if bridge else {}),
        },
    )


async def acquire(
    services: Services,
    ipam: IPAMConf,
    req: Request,
    network: str,
    key: str,
    netns_fd: int,
    mac: str,
    *,
    bridge: str = "",
) -> Lease:
    """Lease an address, asking for the one this pod identity held last time (unless
    another live attachment holds it: the manager drops such a hint)."""
    client_id, _ = claim_identity(services, req, network, key)
    try:
        prefer = services.addressbook.get(client_id)
        lease = await services.leases.acquire(
            lease_request(ipam, req, network, key, netns_fd, mac, client_id, prefer, bridge)
        )
    finally:
        services.leases.unclaim(key)  # the lease (if any) holds the client id now
    await asyncio.to_thread(services.addressbook.remember, client_id, lease.address.ip)
    return lease


def claim_identity(services: Services, req: Request, network: str, key: str) -> tuple[bytes, bool]:
    """This attachment's DHCP client id, and whether it is the per-sandbox form.

    The pod's usual identity (namespace/name/network/ifname) unless another live attachment
    holds it: two live sandboxes of one pod (re-created before the old one is torn down)
    would otherwise be one client to the server, which moves the lease between them. Then
    the container id is added; the address book key follows the client id. A second
    claim for the same key returns the same choice.
    """
    pod_ns, pod_name = pod_ids(req)
    usual = client_id_for(pod_ns, pod_name, req.container_id, network, req.ifname)
    alone = client_id_for(pod_ns, pod_name, req.container_id, network, req.ifname, per_sandbox=True)
    chosen = services.leases.claim_client_id(key, usual, alone)
    return chosen, chosen != usual


async def teardown(
    services: Services, att: Attachment, netns_fd: int | None, conf: NetConf | None
) -> None:
    """Release and remove everything of one attachment; each step best-effort, missing = fine.

    A step that fails does not stop the others; the DEL then fails with the code of the
    first failure (a CNIError keeps its own, e.g. 105 for a read-only state dir) and keeps
    the record, so a retried DEL finishes the job.
    """
    failures: list[tuple[int, str]] = []
    took: list[str] = []  # per-step wall time, for the debug log (where a DEL's time goes)

    async def step(what: str, work: Awaitable[object]) -> None:
        started = time.monotonic()
        try:
            await work
            took.append(f"{what} {(time.monotonic() - started) * 1000:.1f} ms")
        except CNIError as exc:
            log.error("DEL %s: %s incomplete: %s", att.key, what, exc.msg)
            failures.append((exc.code, f"{what}: {exc.msg}"))
        except Exception as exc:
            log.exception("DEL %s: %s failed", att.key, what)
            failures.append((ErrorCode.IO_FAILURE, f"{what}: {exc}"))

    fd = netns_fd
    opened = False
    if fd is None and att.netns:
        try:
            fd = open_netns(att.netns)
            opened = True
            if netns_inode(fd) != att.netns_inode:
                os.close(fd)
                fd, opened = None, False  # the path now names another namespace
        except (FileNotFoundError, CNIError):
            fd = None
    try:
        if att.ipam == "dhcp":
            # Its port on our bridge (main role) is untagged: vlan and vlanTrunk are refused
            # at ADD (not implemented), so the RELEASE may be written on the bridge.
            bridge = att.bridge if att.role != "ipam" else None
            await step("lease release", services.leases.release(att.key, from_bridge=bridge))
            await step("DHCPv6 lease release", services.leases6.release(att.key))
        elif att.ipam:
            delegate = att.delegate
            raw = (
                delegate.conf
                if delegate is not None and delegate.conf
                else (conf.model_dump(by_alias=True) if conf else None)
            )
            if raw is not None:
                work = exec_ipam(
                    "DEL",
                    att.ipam,
                    raw,
                    container_id=att.container_id,
                    netns=att.netns if fd is not None else "",
                    ifname=att.ifname,
                    cni_args=delegate.cni_args if delegate else "",
                    cni_path=delegate.cni_path if delegate else "",
                )
                await step(f"ipam {att.ipam} DEL", work)
        if att.role != "ipam":  # as IPAM, the link and rules are not ours
            # Side by side: neither needs the other gone, and the kernel's veth delete
            # (~20 ms, mostly waiting out an RCU grace period) leaves the CPU idle.
            await asyncio.gather(
                step("veth", services.veths.delete(fd, att.ifname, att.host_veth)),
                step(
                    "firewall",
                    services.firewall.remove_pod_rules(att.network, att.container_id, att.ifname),
                ),
            )
    finally:
        if opened and fd is not None:
            os.close(fd)
    if failures:
        detail = "; ".join(msg for _, msg in failures)
        raise CNIError(failures[0][0], f"DEL of {att.key} incomplete: {detail}")
    started = time.monotonic()
    if await asyncio.to_thread(services.store.remove_was_last, att.key, att.bridge):
        await services.firewall.remove_bridge_rules(att.bridge)  # its last pod went
    took.append(f"record {(time.monotonic() - started) * 1000:.1f} ms")
    log.debug("DEL %s: %s", att.key, ", ".join(took))
