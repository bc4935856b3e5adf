"""Each pod's default route goes where its CNI result said."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..findings import POD_ROUTES, Finding, bad, ok


@dataclass(frozen=True)
class PodRouteFacts:
    label: str
    netns: str
    ifname: str
    expected_gw: str | None  # None: the pod is not meant to have a default route from us
    routes: list[dict[str, Any]] | None  # `ip -j -4 route show table main` in the pod
    error: str = ""


def default_route_problem(
    expected_gw: str, ifname: str, routes: Sequence[Mapping[str, Any]]
) -> str | None:
    defaults = [r for r in routes if r.get("dst") in ("default", "0.0.0.0/0")]
    if not defaults:
        return "has no default route"
    best = min(defaults, key=lambda r: int(r.get("metric", 0) or 0))
    gw, dev = best.get("gateway"), best.get("dev")
    if gw != expected_gw:
        how = f"via {gw}" if gw else f"directly on {dev}"
        return f"default route goes {how}, not via the node {expected_gw}"
    if dev != ifname:
        return f"default route leaves through {dev}, not {ifname}"
    return None


def check_pod_routes(pods: Sequence[PodRouteFacts]) -> list[Finding]:
    findings: list[Finding] = []
    checked = 0
    for pod in pods:
        if pod.expected_gw is None:
            continue
        if pod.routes is None:
            if pod.error:
                findings.append(
                    bad(
                        POD_ROUTES,
                        f"{pod.label}: cannot read its routes ({pod.error})",
                        "See the state check: the pod's namespace may be gone.",
                    )
                )
            continue
        checked += 1
        problem = default_route_problem(pod.expected_gw, pod.ifname, pod.routes)
        if problem:
            findings.append(
                bad(
                    POD_ROUTES,
                    f"{pod.label}: {problem}; its traffic then bypasses the node's "
                    "conntrack/kube-proxy and comes back asymmetrically",
                    "Something inside the pod replaced the route the plugin set (a DHCP client "
                    "or init script in the container, or another plugin in the chain). Put it "
                    f"back: `nsenter --net={pod.netns} ip route replace default via "
                    f"{pod.expected_gw} dev {pod.ifname}` (the on-link route to "
                    f"{pod.expected_gw} must be there too), then stop whatever changed it; "
                    "or recreate the pod.",
                )
            )
    if not findings:
        findings.append(ok(POD_ROUTES, f"{checked} pod(s) route via the node"))
    return findings
