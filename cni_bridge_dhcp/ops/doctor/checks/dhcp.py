"""What the DHCP probe heard."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..findings import DHCP_SERVER, Finding, bad, ok


@dataclass(frozen=True)
class Offer:
    server: str
    address: str
    router: str | None


@dataclass
class ProbeResult:
    via: str  # "veth on cni0", "macvlan on eth0"
    timeout: float
    offers: list[Offer] = field(default_factory=list)
    error: str = ""


def check_dhcp_probe(probe: ProbeResult | None) -> list[Finding]:
    if probe is None:
        return [ok(DHCP_SERVER, "not probed (pass --probe-dhcp)")]
    if probe.error:
        return [
            bad(
                DHCP_SERVER,
                f"the DHCP probe could not run ({probe.error})",
                "Run doctor as root in the node's network namespace; the probe needs the "
                "bridge (or the uplink) to exist.",
            )
        ]
    if not probe.offers:
        return [
            bad(
                DHCP_SERVER,
                f"no DHCP server answered a DISCOVER sent {probe.via} within "
                f"{probe.timeout:g} s: new pods cannot get addresses",
                "Check that the LAN's DHCP server runs and serves this segment (its log shows "
                "the DISCOVER if it arrives). The uplink must be a port of the bridge (uplink "
                "check). Servers that answer only known MAC addresses need reservations (or "
                "ipam.stableMac for stable pod MACs); a server on another subnet needs a DHCP "
                "relay. dnsmasq pings an address ~3 s before offering it: raise --probe-timeout.",
            )
        ]
    servers = sorted({o.server for o in probe.offers})
    findings = []
    if len(servers) > 1:
        findings.append(
            bad(
                DHCP_SERVER,
                f"{len(servers)} DHCP servers answered ({', '.join(servers)}): pods get "
                "addresses from whichever is fastest",
                "Stop the rogue server, or list the right one in ipam.serverAllowList.",
            )
        )
    else:
        offer = probe.offers[0]
        findings.append(
            ok(
                DHCP_SERVER,
                f"{offer.server} offered {offer.address}"
                + (f" (router {offer.router})" if offer.router else "")
                + f" to a probe {probe.via}",
            )
        )
    return findings
