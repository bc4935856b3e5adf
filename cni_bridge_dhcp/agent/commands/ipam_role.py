"""The drop-in `dhcp` IPAM role: leases for interfaces another plugin made (macvlan, ipvlan...).

The main plugin owns the link and configures the address; we only lease, renew and
release. Unlike the reference dhcp daemon, the lease is journaled (survives an agent
restart) and released before the main plugin deletes the link.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from ...cni.errors import CNIError, ErrorCode
from ..config import IPAMConf
from ..datapath.podroutes import plan_routes, pod_state
from ..dhcp import EXPIRED
from ..state.attachments import AttachmentState, attachment_key
from .common import (
    acquire,
    lease_dns,
    new_attachment,
    pod_netns,
    static_routes,
    teardown,
)
from .types import Request, Services

log = logging.getLogger(__name__)


def _ipam_conf(req: Request) -> tuple[str, IPAMConf]:
    name = req.raw.get("name")
    raw = req.raw.get("ipam")
    if not isinstance(name, str) or not isinstance(raw, dict):
        raise CNIError(ErrorCode.INVALID_CONFIG, "IPAM role needs name and an ipam section")
    try:
        return name, IPAMConf.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise CNIError(
            ErrorCode.INVALID_CONFIG, f"invalid network config: ipam.{key}: {first['msg']}"
        ) from None


async def ipam_add(services: Services, req: Request) -> dict[str, Any]:
    network, ipam = _ipam_conf(req)
    key = attachment_key(network, req.container_id, req.ifname)
    with pod_netns(req) as netns_fd:
        mac, _, _ = await asyncio.to_thread(pod_state, netns_fd, req.ifname)
        if mac is None:
            raise CNIError(
                ErrorCode.INVALID_ENV,
                f"interface {req.ifname!r} does not exist in {req.netns}",
                "as an IPAM plugin, the main plugin must create the interface first",
            )
        att = new_attachment(req, network, netns_fd, mac=mac, ipam="dhcp", role="ipam")
        await asyncio.to_thread(services.store.put, att)
        try:
            lease = await acquire(services, ipam, req, network, key, netns_fd, mac)
        except BaseException:
            await asyncio.to_thread(services.store.remove, key)
            raise
    static = static_routes(ipam.routes)
    # As IPAM there is no node bridge: the LAN router is the gateway (reference semantics).
    routes, gateway = plan_routes("dhcp", None, lease.router, lease.routes, static)
    result: dict[str, Any] = {
        "cniVersion": "1.1.0",
        "ips": [{"address": str(lease.address), **({"gateway": str(gateway)} if gateway else {})}],
        "routes": [r.to_result() for r in routes],
    }
    dns = lease_dns(lease)
    if any(dns.values()):
        result["dns"] = {k: v for k, v in dns.items() if v}
    att.state = AttachmentState.READY
    att.ips = [str(lease.address)]
    att.cni_result = result
    await asyncio.to_thread(services.store.put, att)
    return result


async def ipam_del(services: Services, req: Request) -> dict[str, Any]:
    network = req.raw.get("name")
    if not isinstance(network, str):
        raise CNIError(ErrorCode.INVALID_CONFIG, "name is missing from the network config")
    key = attachment_key(network, req.container_id, req.ifname)
    att = services.store.get(key)
    if att is not None:
        await teardown(services, att, None, None)
    elif services.leases.get(key) is not None:
        await services.leases.release(key)
    return {}


async def ipam_check(services: Services, req: Request) -> dict[str, Any]:
    network, _ = _ipam_conf(req)
    key = attachment_key(network, req.container_id, req.ifname)
    lease = services.leases.get(key)
    if lease is None or lease.state == EXPIRED:
        raise CNIError(ErrorCode.CHECK_DRIFT, f"no bound DHCP lease for {key}")
    return {}


HANDLERS = {"ADD": ipam_add, "DEL": ipam_del, "CHECK": ipam_check}
