"""`doctor`'s decisions: each check turns captured facts into findings, with no I/O.

One module per section of the report; gathering (subprocesses, sockets, files, the DHCP
probe) lives in ``..facts`` and ``..probe``. Every name is re-exported here so callers and
tests read ``checks.check_forward`` without knowing the split.
"""

from __future__ import annotations

from ....agent.firewall.detect import Usage
from ..findings import (
    AGENT,
    BACKEND,
    BR_NETFILTER,
    CNI_CONFIG,
    DHCP_SERVER,
    FORWARD,
    NET_MANAGER,
    ORDER,
    POD_ROUTES,
    SERVER_LEASES,
    STATE,
    UPLINK,
    Finding,
    bad,
    exit_code,
    ok,
    render_json,
    render_text,
)
from ..textconf import Ini, load_yaml, read_ini
from .agent import check_agent
from .cniconf import CONF_SUFFIXES, ConfFile, check_cni_config, our_plugin
from .dhcp import Offer, ProbeResult, check_dhcp_probe
from .firewall import (
    BrNetfilter,
    FilterPlace,
    PodFw,
    check_backend,
    check_br_netfilter,
    check_forward,
    families_of,
    iptables_command_backend,
    kube_proxy_present,
    ours_in_nft,
    ours_in_save,
    places_from_nft,
    places_from_save,
)
from .leases import (
    OUR_CLIENT_ID_PREFIXES,
    PodLease,
    ServerLease,
    check_server_leases,
    decode_dhcpd_uid,
    last_per_address,
)
from .managers import (
    ConfigText,
    check_network_managers,
    netplan_snippet,
    networkd_snippet,
    nm_snippet,
)
from .routes import PodRouteFacts, check_pod_routes, default_route_problem
from .state import PENDING_GRACE, AttachmentFacts, JournalFacts, LeaseRecordFacts, check_state
from .uplink import LinkFacts, check_uplink, global_addresses

__all__ = [
    "AGENT",
    "BACKEND",
    "BR_NETFILTER",
    "CNI_CONFIG",
    "CONF_SUFFIXES",
    "DHCP_SERVER",
    "FORWARD",
    "NET_MANAGER",
    "ORDER",
    "OUR_CLIENT_ID_PREFIXES",
    "PENDING_GRACE",
    "POD_ROUTES",
    "SERVER_LEASES",
    "STATE",
    "UPLINK",
    "AttachmentFacts",
    "BrNetfilter",
    "ConfFile",
    "ConfigText",
    "FilterPlace",
    "Finding",
    "Ini",
    "JournalFacts",
    "LeaseRecordFacts",
    "LinkFacts",
    "Offer",
    "PodFw",
    "PodLease",
    "PodRouteFacts",
    "ProbeResult",
    "ServerLease",
    "Usage",
    "bad",
    "check_agent",
    "check_backend",
    "check_br_netfilter",
    "check_cni_config",
    "check_dhcp_probe",
    "check_forward",
    "check_network_managers",
    "check_pod_routes",
    "check_server_leases",
    "check_state",
    "check_uplink",
    "decode_dhcpd_uid",
    "default_route_problem",
    "exit_code",
    "families_of",
    "global_addresses",
    "iptables_command_backend",
    "kube_proxy_present",
    "last_per_address",
    "load_yaml",
    "netplan_snippet",
    "networkd_snippet",
    "nm_snippet",
    "ok",
    "our_plugin",
    "ours_in_nft",
    "ours_in_save",
    "places_from_nft",
    "places_from_save",
    "read_ini",
    "render_json",
    "render_text",
]
