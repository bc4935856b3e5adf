"""Network configuration models: every reference `bridge` key plus ours, validated.

Errors name the offending key: type/value problems are code 7 (invalid config); keys we
accept but do not implement are code 2 (unsupported field).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..cni.errors import CNIError, ErrorCode
from ..cni.names import MAC, valid_ifname


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)


class VlanTrunk(_Model):
    id: Annotated[int, Field(ge=1, le=4094)] | None = None
    min_id: int | None = Field(None, alias="minID", ge=1, le=4094)
    max_id: int | None = Field(None, alias="maxID", ge=1, le=4094)


class DNS(_Model):
    nameservers: list[str] = []
    domain: str = ""
    search: list[str] = []
    options: list[str] = []


class RouteConf(_Model):
    dst: str
    gw: str | None = None

    @field_validator("dst")
    @classmethod
    def _dst(cls, v: str) -> str:
        ipaddress.ip_network(v, strict=False)
        return v

    @field_validator("gw")
    @classmethod
    def _gw(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v


class DhcpRequestOption(_Model):
    option: str
    skip_default: bool = Field(False, alias="skipDefault")


class DhcpProvideOption(_Model):
    option: str
    value: str | None = None
    from_arg: str | None = Field(None, alias="fromArg")

    @model_validator(mode="after")
    def _one_source(self) -> DhcpProvideOption:
        if self.value is None and self.from_arg is None:
            raise ValueError("needs 'value' or 'fromArg'")
        return self


class IPAMConf(_Model):
    type: str
    # Our DHCP client (ipam.type "dhcp" or "cni-bridge-dhcp"); reference dhcp keys keep meaning.
    request: list[DhcpRequestOption] = []
    provide: list[DhcpProvideOption] = []
    timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    stable_mac: bool = Field(False, alias="stableMac")
    # Option 61: "pod" (the pod identity), "mac" (01+MAC, RFC 2132), "none" (keyed by chaddr).
    client_id: Literal["pod", "mac", "none"] = Field("pod", alias="clientId")
    server_allow_list: list[ipaddress.IPv4Address] = Field([], alias="serverAllowList")
    # From "ip@mac" entries of serverAllowList (not a key of its own): see _server_pins.
    server_macs: dict[ipaddress.IPv4Address, str] = {}
    # Seconds the offered address is ARP-probed before use; 0 skips the probe.
    arp_probe_wait: Annotated[float, Field(ge=0, le=10)] | None = Field(None, alias="arpProbeWait")
    routes: list[RouteConf] = []
    # IPv6 of the pod from the LAN's router advertisements (SLAAC): "auto" waits briefly
    # for an RA (datapath/slaac.RA_WAIT) and reports the address; "off" disables IPv6 on
    # the pod interface.
    ipv6: Literal["auto", "off"] = "auto"
    # Stateful DHCPv6 (IA_NA) for the pod (dhcp/v6): true always, false never, absent when
    # the RA the pod received has the M (managed) flag.
    dhcpv6: bool | None = None
    daemon_socket_path: str | None = Field(None, alias="daemonSocketPath")
    agent_socket: str | None = Field(None, alias="agentSocket")

    @model_validator(mode="before")
    @classmethod
    def _server_pins(cls, data: Any) -> Any:
        """serverAllowList entries "ip@mac" pin the server's MAC: its replies are accepted
        only from that link-layer source. The ip part is validated by the field itself."""
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if k != "server_macs"}
        entries = data.get("serverAllowList", data.get("server_allow_list"))
        if not isinstance(entries, list):
            return data
        ips: list[object] = []
        pins: dict[str, str] = {}
        for entry in entries:
            if isinstance(entry, str) and "@" in entry:
                ip, _, mac = entry.partition("@")
                if not MAC.match(mac):
                    raise ValueError(
                        f"serverAllowList entry {entry!r}: {mac!r} is not a MAC address "
                        '(expected "ip" or "ip@aa:bb:cc:dd:ee:ff")'
                    )
                pins[ip] = mac.lower()
                entry = ip
            ips.append(entry)
        data["serverAllowList" if "serverAllowList" in data else "server_allow_list"] = ips
        data["server_macs"] = pins
        return data

    @property
    def is_ours(self) -> bool:
        return self.type in ("dhcp", "cni-bridge-dhcp")

    @model_validator(mode="after")
    def _dhcpv6_needs_ipv6(self) -> IPAMConf:
        if self.dhcpv6 and self.ipv6 == "off":
            raise ValueError('ipam.dhcpv6 true conflicts with ipam.ipv6 "off"')
        return self

    @model_validator(mode="after")
    def _one_client_id(self) -> IPAMConf:
        # Two sources for option 61 would leave it unclear which one the server keys by.
        if self.client_id != "pod" and any(
            p.option.lower() in ("61", "dhcp-client-identifier", "client-id") for p in self.provide
        ):
            raise ValueError(
                f"ipam.clientId {self.client_id!r} conflicts with option 61 in ipam.provide "
                '(a provided client id needs clientId "pod", the default)'
            )
        return self


class RuntimeConfig(_Model):
    mac: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is not None and not MAC.match(v):
            raise ValueError(f"{v!r} is not a MAC address")
        return v


class NetConf(_Model):
    cni_version: str = Field(alias="cniVersion")
    name: str
    type: str
    # Reference bridge plugin keys, same meanings and defaults.
    bridge: str = "cni0"
    is_gateway: bool = Field(False, alias="isGateway")
    is_default_gateway: bool = Field(False, alias="isDefaultGateway")
    force_address: bool = Field(False, alias="forceAddress")
    ip_masq: bool = Field(False, alias="ipMasq")
    ip_masq_backend: Literal["iptables", "nftables"] | None = Field(None, alias="ipMasqBackend")
    mtu: Annotated[int, Field(ge=68, le=65535)] | None = None
    hairpin_mode: bool = Field(False, alias="hairpinMode")
    promisc_mode: bool = Field(False, alias="promiscMode")
    vlan: int = 0
    vlan_trunk: list[VlanTrunk] = Field([], alias="vlanTrunk")
    preserve_default_vlan: bool = Field(True, alias="preserveDefaultVlan")
    macspoofchk: bool = False
    enabledad: bool = False
    disable_container_interface: bool = Field(False, alias="disableContainerInterface")
    port_isolation: bool = Field(False, alias="portIsolation")
    ipam: IPAMConf | None = None
    dns: DNS = DNS()
    runtime_config: RuntimeConfig = Field(RuntimeConfig(), alias="runtimeConfig")
    args: dict[str, Any] = {}
    prev_result: dict[str, Any] | None = Field(None, alias="prevResult")
    # Ours.
    uplink_interface: str | None = Field(None, alias="uplinkInterface")
    default_route: Literal["node", "dhcp", "none"] = Field("node", alias="defaultRoute")
    firewall_backend: Literal["auto", "iptables", "nftables", "none"] = Field(
        "auto", alias="firewallBackend"
    )
    agent_socket: str | None = Field(None, alias="agentSocket")
    valid_attachments: list[dict[str, Any]] | None = Field(None, alias="cni.dev/valid-attachments")

    @field_validator("bridge")
    @classmethod
    def _bridge(cls, v: str) -> str:
        if not valid_ifname(v):
            raise ValueError(f"{v!r} is not a valid interface name")
        return v

    @field_validator("uplink_interface")
    @classmethod
    def _uplink(cls, v: str | None) -> str | None:
        if v is not None:
            if not v:
                raise ValueError("must not be empty")
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(
                    f"{v!r} is neither an interface name nor a valid regex: {exc}"
                ) from None
        return v

    @property
    def args_mac(self) -> str | None:
        cni = self.args.get("cni") if isinstance(self.args, dict) else None
        mac = cni.get("mac") if isinstance(cni, dict) else None
        return mac if isinstance(mac, str) else None


# Reference keys accepted with their meaning but not implemented yet: code 2 when used
# with a non-default value. Shrinks as features land.
NOT_IMPLEMENTED: dict[str, Any] = {
    "vlan": 0,
    "vlanTrunk": [],
}


_FIELD_ALIASES = {name: (f.alias or name) for name, f in NetConf.model_fields.items()}


def parse_netconf(raw: dict[str, Any], *, check_unimplemented: bool = True) -> NetConf:
    try:
        conf = NetConf.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(_FIELD_ALIASES.get(str(p), str(p)) for p in first["loc"]) or "config"
        msg = first["msg"].removeprefix("Value error, ")
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"invalid network config: {key}: {msg}",
            f"{len(exc.errors())} problem(s) in total",
        ) from None
    _semantic_checks(conf)
    if check_unimplemented:
        for key, default in NOT_IMPLEMENTED.items():
            if key in raw and raw[key] != default:
                raise CNIError(
                    ErrorCode.UNSUPPORTED_FIELD,
                    f"{key} is not supported yet by cni-bridge-dhcp",
                    f"remove {key} from the network config or set it to {default!r}",
                )
        _gateway_keys_need_delegated_ipam(conf)
    return conf


def _gateway_keys_need_delegated_ipam(conf: NetConf) -> None:
    # With our DHCP IPAM the "gateway" is the LAN router: putting its address on the node's
    # bridge would steal the router's address on the LAN. (DEL never checks this.)
    if conf.ipam is None or not conf.ipam.is_ours:
        return
    for key, on in (
        ("isDefaultGateway", conf.is_default_gateway),
        ("isGateway", conf.is_gateway),
    ):
        if on:
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                f"{key} cannot be used with ipam type {conf.ipam.type!r}",
                "the gateway a DHCP lease names is the LAN router, whose address must not go "
                'on the node\'s bridge; use defaultRoute "node" to route pods via the node, '
                "or a delegated IPAM (host-local, static)",
            )


def _semantic_checks(conf: NetConf) -> None:
    if conf.hairpin_mode and conf.promisc_mode:
        raise CNIError(ErrorCode.INVALID_CONFIG, "hairpinMode and promiscMode cannot both be true")
    if not 0 <= conf.vlan <= 4094:
        raise CNIError(ErrorCode.INVALID_CONFIG, f"vlan {conf.vlan} is out of range 0-4094")
    if conf.disable_container_interface and conf.ipam is not None and conf.ipam.type:
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            "disableContainerInterface cannot be used with ipam",
            "a container interface that stays down cannot get addresses",
        )
    if conf.vlan and conf.vlan_trunk:
        raise CNIError(ErrorCode.INVALID_CONFIG, "vlan and vlanTrunk cannot both be set")
    for trunk in conf.vlan_trunk:
        if trunk.id is None and (trunk.min_id is None or trunk.max_id is None):
            raise CNIError(
                ErrorCode.INVALID_CONFIG, "vlanTrunk entries need id, or minID and maxID"
            )
        if trunk.min_id is not None and trunk.max_id is not None and trunk.min_id > trunk.max_id:
            raise CNIError(ErrorCode.INVALID_CONFIG, "vlanTrunk minID is greater than maxID")


# CNI_ARGS and MAC precedence (were agent/identity.py, merged here: both read a NetConf).
KNOWN_ARGS = frozenset(
    {
        "IgnoreUnknown",
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
        "MAC",
    }
)


def check_args(conf: NetConf, args: Mapping[str, str]) -> None:
    """Refuse unknown CNI_ARGS keys unless IgnoreUnknown is set, like the reference."""
    if args.get("IgnoreUnknown", "").lower() in ("1", "true"):
        return
    known = set(KNOWN_ARGS)
    if conf.ipam is not None:
        known.update(p.from_arg for p in conf.ipam.provide if p.from_arg)
    for key in args:
        if key not in known:
            raise CNIError(
                ErrorCode.UNSUPPORTED_FIELD,
                f"CNI_ARGS: unknown key {key!r}",
                "set IgnoreUnknown=1 in CNI_ARGS to ignore keys this plugin does not use",
            )


def choose_mac(conf: NetConf, args: Mapping[str, str]) -> str | None:
    """runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC (None: kernel or stableMac decides)."""
    for source, mac in (
        ("runtimeConfig.mac", conf.runtime_config.mac),
        ("args.cni.mac", conf.args_mac),
        ("CNI_ARGS MAC", args.get("MAC")),
    ):
        if mac:
            if not MAC.match(mac):
                raise CNIError(ErrorCode.INVALID_CONFIG, f"{source} {mac!r} is not a MAC address")
            first = int(mac[:2], 16)
            if first & 1:
                raise CNIError(
                    ErrorCode.INVALID_CONFIG, f"{source} {mac!r} is a multicast MAC address"
                )
            return mac.lower()
    return None
