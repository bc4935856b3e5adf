"""The node's own DHCP-leased address at a takeover: who leased it, with which identity,
and making that client stand down (reversibly) while the agent keeps the lease alive.

Ubuntu Server's netplan default (and most homelab nodes with a "DHCP reservation") get the
node's address from DHCP. After the takeover the address sits on the bridge, while the
client that owns it still runs on the enslaved uplink: it can no longer renew correctly
(its script would put the address back on a bridge port), and when the lease runs out the
node loses its address. So at takeover:

- a dynamic address is one with a finite valid lifetime (IFA_F_PERMANENT unset);
- its client is found: a dhclient / udhcpc / dhcpcd process in this network namespace
  naming the uplink (``/proc/*/cmdline``), a systemd-networkd lease file
  (``/run/systemd/netif/leases/<ifindex>`` with that ADDRESS=), or NetworkManager;
- the identity the server knows is read from it (option 61: dhclient's lease file
  ``option dhcp-client-identifier``, networkd's ``CLIENTID=``, dhcpcd's lease, udhcpc's
  ``-x 0x3d:`` or its default 01+MAC; with ``-C`` or dhclient's default: none);
- a standalone client process is paused with SIGSTOP (it keeps its state and config, and
  SIGCONT at ``uplink restore`` resumes it: it renews on the uplink again);
  systemd-networkd and NetworkManager manage every interface from one process, so they
  cannot be paused for one link: the takeover is refused (code 7) with the bridge config
  to give them instead.

What was found and paused is recorded in ``<state_dir>/node-dhcp.json``; the agent's node
lease keeper (agent/dhcp/nodelease.py) reads it, ``uplink restore`` undoes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from dataclasses import asdict, dataclass, field, replace
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from ...cni.errors import CNIError, ErrorCode
from ..state.statefile import read_json, remove, write_json
from . import journal as uj
from .plan import AF_INET, AddrSnap, UplinkSnapshot, addresses_to_move
from .state import UplinkState

log = logging.getLogger(__name__)

RECORD_NAME = "node-dhcp.json"

DHCLIENT = "dhclient"
UDHCPC = "udhcpc"
DHCPCD = "dhcpcd"
NETWORKD = "systemd-networkd"
NETWORKMANAGER = "NetworkManager"
# Managers that can be paused for this one link (one process per interface).
PAUSABLE = (DHCLIENT, UDHCPC, DHCPCD)


@dataclass(frozen=True)
class Paths:
    """Where the clients keep their state; a test points these into its own tree."""

    proc: Path = Path("/proc")
    run: Path = Path("/run")
    var_lib: Path = Path("/var/lib")


@dataclass(frozen=True)
class PrevClient:
    manager: str
    pid: int | None = None
    starttime: str | None = None  # /proc/<pid>/stat field 22: a reused pid is not ours
    cmdline: tuple[str, ...] = ()
    client_id: str | None = None  # hex of option 61; "" none sent; None unknown
    source: str = ""  # where it was found (for messages)


@dataclass
class NodeDhcp:
    """The record of a dynamic node address taken over (``node-dhcp.json``)."""

    uplink: str
    bridge: str
    mac: str
    address: str  # "ip/prefix"
    client_id: str  # hex option 61 the keeper sends; "" none
    valid_lft: int  # at the takeover
    clients: list[PrevClient] = field(default_factory=list)
    paused: list[PrevClient] = field(default_factory=list)

    @property
    def interface(self) -> IPv4Interface:
        return IPv4Interface(self.address)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeDhcp:
        def clients(key: str) -> list[PrevClient]:
            out = []
            for c in data.get(key, ()):
                c = dict(c)
                c["cmdline"] = tuple(c.get("cmdline", ()))
                out.append(PrevClient(**c))
            return out

        return cls(
            uplink=str(data["uplink"]),
            bridge=str(data["bridge"]),
            mac=str(data["mac"]),
            address=str(IPv4Interface(str(data["address"]))),
            client_id=str(data.get("client_id", "")),
            valid_lft=int(data.get("valid_lft", 0)),
            clients=clients("clients"),
            paused=clients("paused"),
        )


def record_path(state_dir: Path) -> Path:
    return Path(state_dir) / RECORD_NAME


def load_record(state_dir: Path) -> NodeDhcp | None:
    data = read_json(record_path(state_dir))
    if data is None:
        return None
    try:
        return NodeDhcp.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("ignoring %s: %s", record_path(state_dir), exc)
        return None


def save_record(state_dir: Path, record: NodeDhcp) -> None:
    write_json(record_path(state_dir), record.to_dict())


def remove_record(state_dir: Path) -> None:
    remove(record_path(state_dir))


# --------------------------------------------------------------------------- detection


def dynamic_ipv4(snapshot: UplinkSnapshot) -> AddrSnap | None:
    """The uplink's primary IPv4 address when its lifetime is finite (a DHCP lease)."""
    for a in addresses_to_move(snapshot):
        if a.family == AF_INET and not a.secondary and a.valid_lft is not None:
            return a
    return None


def find_clients(
    uplink: str, ifindex: int, address: str, paths: Paths = Paths()
) -> list[PrevClient]:
    """Every DHCP client that owns ``address`` on ``uplink`` in this network namespace."""
    found = [c for c in _processes(uplink, paths)]
    networkd = _networkd_lease(ifindex, address, paths)
    if networkd is not None:
        found.append(networkd)
    return found


def _own_netns(proc: Path) -> int | None:
    try:
        return os.stat(proc / "self" / "ns" / "net").st_ino
    except OSError:
        return None


def _processes(uplink: str, paths: Paths) -> list[PrevClient]:
    own = _own_netns(paths.proc)
    me = os.getpid()
    out = []
    try:
        entries = list(paths.proc.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            # Only this namespace's clients: the host's dhclient on its own "eth0" is not ours.
            if own is not None and os.stat(entry / "ns" / "net").st_ino != own:
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
        client = _classify(argv, uplink, paths)
        if client is None:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        starttime = fields[19] if len(fields) > 19 else None
        out.append(
            PrevClient(
                manager=client.manager,
                pid=int(entry.name),
                starttime=starttime,
                cmdline=argv,
                client_id=client.client_id,
                source=f"process {entry.name}",
            )
        )
    return out


def _classify(argv: tuple[str, ...], uplink: str, paths: Paths) -> PrevClient | None:
    if not argv:
        return None
    prog = os.path.basename(argv[0])
    args = list(argv[1:])
    if prog == "busybox" and args and args[0] == UDHCPC:
        prog, args = UDHCPC, args[1:]
    if prog == "NetworkManager":
        return PrevClient(manager=NETWORKMANAGER)
    if prog == UDHCPC:
        if _udhcpc_interface(args) != uplink:
            return None
        return PrevClient(manager=UDHCPC, client_id=_udhcpc_client_id(args))
    if prog == DHCLIENT:
        if uplink not in args:
            return None
        lease_file = _arg_after(args, "-lf")
        if lease_file and "/NetworkManager/" in lease_file:
            return PrevClient(manager=NETWORKMANAGER)
        conf = Path(_arg_after(args, "-cf") or "/etc/dhcp/dhclient.conf")
        return PrevClient(
            manager=DHCLIENT, client_id=_dhclient_client_id(uplink, lease_file, conf, paths)
        )
    if prog == DHCPCD:
        positional = [a for a in args if not a.startswith("-")]
        if positional and uplink not in positional:
            return None
        return PrevClient(manager=DHCPCD, client_id=_dhcpcd_client_id(uplink, paths))
    return None


def _arg_after(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def _udhcpc_interface(args: list[str]) -> str:
    """udhcpc's -i IFACE (default eth0)."""
    for i, a in enumerate(args):
        if a in ("-i", "--interface") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--interface="):
            return a.split("=", 1)[1]
        if a.startswith("-i") and len(a) > 2:
            return a[2:]
    return "eth0"


def _udhcpc_client_id(args: list[str]) -> str | None:
    """Busybox udhcpc sends 01+MAC unless -C, or what -x 0x3d:HEX / 61:HEX says."""
    if "-C" in args or "--clientid-none" in args:
        return ""
    for i, a in enumerate(args):
        value = args[i + 1] if a in ("-x", "--option") and i + 1 < len(args) else None
        if value is None and a.startswith("-x") and len(a) > 2:
            value = a[2:]
        if value is None:
            continue
        code, _, data = value.partition(":")
        if code.lower() in ("0x3d", "61", "clientid"):
            hexed = data.replace(":", "")
            if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", hexed):
                return hexed.lower()
    return None  # the default: 01+MAC, filled in by the caller


def _dhclient_client_id(uplink: str, lease_file: str | None, conf: Path, paths: Paths) -> str:
    """``option dhcp-client-identifier`` of dhclient's last lease on ``uplink`` (servers that
    echo option 61, RFC 6842), else ``send dhcp-client-identifier`` of its config file; ""
    when neither says (dhclient sends no option 61 unless configured to)."""
    try:
        configured = dhclient_conf_client_id(conf.read_text(errors="replace"), uplink)
    except OSError:
        configured = None
    candidates = (
        [Path(lease_file)]
        if lease_file
        else [
            paths.var_lib / "dhcp" / f"dhclient.{uplink}.leases",
            paths.var_lib / "dhcp" / "dhclient.leases",
            paths.var_lib / "dhclient" / f"dhclient-{uplink}.leases",
        ]
    )
    for path in candidates:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found = dhclient_lease_client_id(text, uplink)
        if found:
            return found
    return configured or ""


def dhclient_conf_client_id(text: str, uplink: str) -> str | None:
    """``send dhcp-client-identifier`` (hex) of a dhclient.conf: the one inside
    ``interface "<uplink>" {}`` wins over a global one."""
    text = re.sub(r"#.*", "", text)
    pattern = r"send\s+dhcp-client-identifier\s+([^;]+);"
    for block in re.findall(rf'interface\s+"{re.escape(uplink)}"\s*\{{(.*?)\}}', text, re.S):
        m = re.search(pattern, block)
        if m:
            return _dhclient_value(m.group(1).strip())
    outside = re.sub(r'interface\s+"[^"]*"\s*\{.*?\}', "", text, flags=re.S)
    m = re.search(pattern, outside)
    return _dhclient_value(m.group(1).strip()) if m else None


def dhclient_lease_client_id(text: str, uplink: str) -> str | None:
    """Option 61 (hex) of the last ``lease {}`` for ``uplink`` in a dhclient lease file;
    "" for a lease without one; None when there is no lease for it."""
    result: str | None = None
    for block in re.findall(r"lease\s*\{(.*?)\n\}", text, re.S):
        if not re.search(rf'interface\s+"{re.escape(uplink)}"\s*;', block):
            continue
        m = re.search(r"option\s+dhcp-client-identifier\s+([^;]+);", block)
        result = _dhclient_value(m.group(1).strip()) if m else ""
    return result


def _dhclient_value(value: str) -> str:
    if value.startswith('"') and value.endswith('"'):
        return value[1:-1].encode().hex()
    parts = value.split(":")
    if all(re.fullmatch(r"[0-9a-fA-F]{1,2}", p) for p in parts):
        return "".join(p.zfill(2) for p in parts).lower()
    return value.encode().hex()


def _dhcpcd_client_id(uplink: str, paths: Paths) -> str | None:
    """Option 61 echoed (RFC 6842) in dhcpcd's saved ACK; None when unknown."""
    for path in (
        paths.var_lib / "dhcpcd" / f"{uplink}.lease",
        paths.var_lib / "dhcpcd" / f"dhcpcd-{uplink}.lease",
    ):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        value = bootp_option(raw, 61)
        if value is not None:
            return value.hex()
    return None


def bootp_option(raw: bytes, code: int) -> bytes | None:
    """Option ``code`` of a BOOTP/DHCP message (no overload handling: a saved lease)."""
    if len(raw) < 240 or raw[236:240] != b"\x63\x82\x53\x63":
        return None
    i = 240
    while i < len(raw):
        opt = raw[i]
        if opt == 255:
            break
        if opt == 0:
            i += 1
            continue
        if i + 1 >= len(raw):
            break
        size = raw[i + 1]
        if opt == code:
            return raw[i + 2 : i + 2 + size]
        i += 2 + size
    return None


def _networkd_lease(ifindex: int, address: str, paths: Paths) -> PrevClient | None:
    path = paths.run / "systemd" / "netif" / "leases" / str(ifindex)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    fields = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    if fields.get("ADDRESS") != address:
        return None  # another link's lease (ifindexes are per namespace)
    return PrevClient(
        manager=NETWORKD, client_id=fields.get("CLIENTID", "").lower() or None, source=str(path)
    )


def node_client_id(clients: list[PrevClient], mac: str) -> str:
    """Option 61 (hex) the server knows the node by; 01+MAC when nothing says otherwise."""
    for c in clients:
        if c.client_id is not None:
            return c.client_id
    return "01" + mac.replace(":", "").lower()


# --------------------------------------------------------------------------- policy


def refusal(
    clients: list[PrevClient], uplink: str, bridge: str, address: str, mac: str
) -> CNIError | None:
    """CNIError(7) when a manager that cannot be paused for one link owns the address."""
    for c in clients:
        if c.manager == NETWORKD:
            return CNIError(
                ErrorCode.INVALID_CONFIG,
                f"uplinkInterface {uplink!r}: its address {address} is leased by "
                f"systemd-networkd ({c.source}), which cannot stand down for one link",
                "give the bridge to networkd instead (e.g. netplan, then `netplan apply`):\n"
                "network:\n  version: 2\n  ethernets:\n"
                f"    {uplink}:\n      dhcp4: false\n      dhcp6: false\n"
                f"  bridges:\n    {bridge}:\n      interfaces: [{uplink}]\n"
                f"      macaddress: {mac}\n      dhcp4: true\n      dhcp-identifier: mac\n"
                "      parameters:\n        stp: false\n        forward-delay: 0",
            )
        if c.manager == NETWORKMANAGER:
            return CNIError(
                ErrorCode.INVALID_CONFIG,
                f"uplinkInterface {uplink!r}: its address {address} is leased by "
                "NetworkManager, which cannot stand down for one link",
                "give the bridge to NetworkManager instead: "
                f"nmcli con add type bridge ifname {bridge} con-name {bridge} "
                f"bridge.stp no bridge.mac-address {mac} ipv4.method auto "
                f"ipv4.dhcp-client-id mac; nmcli con add type bridge-slave ifname {uplink} "
                f"master {bridge}; nmcli con up {bridge}",
            )
    return None


def pause(clients: list[PrevClient], paths: Paths = Paths()) -> list[PrevClient]:
    """SIGSTOP each standalone client process; the ones paused."""
    paused = []
    for c in clients:
        if c.manager not in PAUSABLE or c.pid is None or not _same_process(c, paths):
            continue
        try:
            os.kill(c.pid, signal.SIGSTOP)
        except OSError as exc:
            log.warning("could not pause %s (pid %d): %s", c.manager, c.pid, exc)
            continue
        log.warning(
            "paused %s (pid %d) on the taken-over uplink with SIGSTOP: the agent keeps the "
            "node's lease now; `uplink restore` resumes it", c.manager, c.pid,
        )  # fmt: skip
        paused.append(c)
    return paused


def resume(paused: list[PrevClient], paths: Paths = Paths()) -> list[str]:
    """SIGCONT each paused client still there (same pid and start time); what was resumed."""
    done = []
    for c in paused:
        if c.pid is None or not _same_process(c, paths):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(c.pid, signal.SIGCONT)
            done.append(f"{c.manager} (pid {c.pid})")
    return done


def _same_process(c: PrevClient, paths: Paths) -> bool:
    if c.pid is None:
        return False
    try:
        stat = (paths.proc / str(c.pid) / "stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()
    return c.starttime is None or (len(fields) > 19 and fields[19] == c.starttime)


def follow_node_address(state_dir: Path, old: IPv4Interface, new: IPv4Interface) -> None:
    """The node's leased address changed (NAK, or the server moved it): the record and the
    takeover's recorded state name the new one, so new pods route via it. The snapshot
    keeps the old one (``uplink restore`` then refuses: the bridge holds an address the
    snapshot lacks)."""
    record = load_record(state_dir)
    if record is not None and record.interface == old:
        record.address = str(new)
        save_record(state_dir, record)
    with uj.locked(state_dir, 30.0):
        journal = uj.load(state_dir)
        if journal is None or journal.state is None:
            return
        state = UplinkState.from_dict(journal.state)
        state = replace(
            state,
            addresses=tuple(new if a == old else a for a in state.addresses),
            node_ipv4=new.ip if state.node_ipv4 == old.ip else state.node_ipv4,
        )
        journal.state = state.to_dict()
        uj.save(state_dir, journal)
