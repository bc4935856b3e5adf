"""Statistics, log parsing and the markdown report of `make bench`.

Everything here is pure (strings and numbers in, strings and numbers out) so it can be unit
tested without root; scripts/bench.py does the measuring and hands its raw data here.
All times are milliseconds unless a name says otherwise.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# -- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default).

    With few samples a high percentile is close to the maximum: p99 of 10 samples lies
    between the 9th and the 10th value.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    n: int
    min: float
    median: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary | None:
        if not values:
            return None
        return cls(
            n=len(values),
            min=min(values),
            median=statistics.median(values),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            max=max(values),
            mean=statistics.fmean(values),
        )


def pair_ratios(ours: Sequence[float], reference: Sequence[float]) -> list[float]:
    """ours[i] / reference[i] for each pair measured back to back (pairs with a 0 skipped)."""
    return [o / r for o, r in zip(ours, reference, strict=False) if r > 0]


def ok_times(ops: Iterable[Mapping[str, Any]]) -> list[float]:
    """Latencies of the successful operations of a list of op records."""
    return [float(op["ms"]) for op in ops if op.get("ok")]


def failures(ops: Iterable[Mapping[str, Any]]) -> int:
    return sum(1 for op in ops if not op.get("ok"))


# -- formatting ---------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    """A duration in ms with precision that fits its size (seconds from 1000 ms up)."""
    if value is None or math.isnan(value):
        return "n/a"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_mb(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MB"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- logs ---------------------------------------------------------------------------------

_AGENT_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) (?P<level>[A-Z]+) (?P<logger>\S+): "
    r"(?P<msg>.*)$"
)
# "ADD <cid> pod=<ns>/<name> if=<if> ok: <addresses> in <secs> s" (older agents: "ok in
# <secs> s: <addresses>"); IPv6 addresses hold colons too. Failed operations do not match.
_OP_DONE = re.compile(
    r"^(?P<op>ADD|DEL) (?P<cid>\S+) pod=\S+ if=\S+ ok(?:: .*)? in (?P<secs>\d+\.\d+) s(?:: .*)?$"
)

# name -> (first mark, second mark): intervals between the marks collected below
ADD_STEPS = {
    "to_offer": ("start", "offer"),
    "offer_to_ack": ("offer", "ack"),
    "arp_probe": ("ack", "arp"),
    "after_arp": ("arp", "done"),
}
DEL_STEPS = {
    "to_released": ("start", "released"),
    "after_release": ("released", "done"),
}


def _agent_time(match: re.Match[str]) -> float:
    stamp = datetime.strptime(match["ts"], "%Y-%m-%d %H:%M:%S")
    return stamp.timestamp() * 1000 + int(match["ms"])


def _agent_marks(log_text: str, op: str, wanted: set[str]) -> dict[str, dict[str, float]]:
    """Per container id: timestamps (ms) of the DHCP milestones and the end of ``op``."""
    marks: dict[str, dict[str, float]] = {cid: {} for cid in wanted}
    for line in log_text.splitlines():
        m = _AGENT_LINE.match(line)
        if m is None:
            continue
        msg = m["msg"]
        done = _OP_DONE.match(msg)
        if done is not None:
            if done["op"] == op and done["cid"] in wanted:
                got = marks[done["cid"]]
                got["done"] = _agent_time(m)
                got["total"] = float(done["secs"]) * 1000
                got["start"] = got["done"] - got["total"]
            continue
        label, sep, rest = msg.partition(": ")
        parts = label.split("/")
        if not sep or len(parts) != 3 or parts[1] not in wanted:
            continue
        got = marks[parts[1]]
        for prefix, key in (
            ("OFFER ", "offer"),
            ("ACK ", "ack"),
            ("ARP probe", "arp"),
            ("state=RELEASED", "released"),
        ):
            if rest.startswith(prefix) and key not in got:
                got[key] = _agent_time(m)
    return marks


def _steps(
    log_text: str, op: str, container_ids: Iterable[str], steps: Mapping[str, tuple[str, str]]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for cid, got in _agent_marks(log_text, op, set(container_ids)).items():
        needed = {mark for pair in steps.values() for mark in pair} | {"total"}
        if not needed <= set(got):
            continue
        row = {"total": got["total"]}
        row.update({name: got[b] - got[a] for name, (a, b) in steps.items()})
        out[cid] = row
    return out


def parse_agent_totals(log_text: str, op: str, container_ids: Iterable[str]) -> dict[str, float]:
    """The agent's own duration (ms) of each successful ``op`` ("ADD"/"DEL") per container."""
    marks = _agent_marks(log_text, op, set(container_ids))
    return {cid: got["total"] for cid, got in marks.items() if "total" in got}


def parse_agent_add_steps(
    log_text: str, container_ids: Iterable[str]
) -> dict[str, dict[str, float]]:
    """Where each ADD spent its time inside the agent, from the agent's debug log.

    Per container id: ``total`` (the agent's own "ok in" figure), ``to_offer`` (request
    start to the OFFER: config, bridge/firewall checks, veth, DISCOVER and the server's
    answer), ``offer_to_ack``, ``arp_probe`` (ACK to the end of the ARP probe of the offered
    address) and ``after_arp`` (addresses, routes, firewall, journal, result). ADDs whose
    lines are incomplete are left out. Log timestamps have 1 ms resolution.
    """
    return _steps(log_text, "ADD", container_ids, ADD_STEPS)


def parse_agent_del_steps(
    log_text: str, container_ids: Iterable[str]
) -> dict[str, dict[str, float]]:
    """Per DEL: ``total``, ``to_released`` (request in to the lease released at the server)
    and ``after_release`` (pod link, firewall rules, journal)."""
    return _steps(log_text, "DEL", container_ids, DEL_STEPS)


_REF_RETRY = re.compile(r"retrying in (?P<secs>[\d.]+) seconds")


def parse_reference_retries(log_text: str) -> list[float]:
    """Backoff waits (ms) the reference dhcp daemon logged ("retrying in X seconds")."""
    return [float(m["secs"]) * 1000 for m in _REF_RETRY.finditer(log_text)]


def count_server_events(dnsmasq_log: str) -> dict[str, int]:
    """NAKs and DECLINEs in a stretch of dnsmasq's --log-dhcp output (both mean a retry)."""
    return {
        "naks": dnsmasq_log.count("DHCPNAK("),
        "declines": dnsmasq_log.count("DHCPDECLINE("),
    }


_TCPDUMP = re.compile(
    r"^(?P<t>\d+\.\d+) IP \S+ > \S+: BOOTP/DHCP, (?P<kind>Request|Reply)"
    r"(?: from (?P<mac>[0-9a-f:]{17}))?"
)


def parse_dhcp_wire(tcpdump_text: str) -> dict[str, list[float]]:
    """Server answer times of plain client exchanges, from `tcpdump -tt -n` lines.

    A client's first Request is its DISCOVER, the next Reply the OFFER, its second Request
    the REQUEST and the following Reply the ACK (one client at a time on the capture).
    Returns ``discover_to_offer``, ``offer_to_request`` (client think time) and
    ``request_to_ack``.
    """
    out: dict[str, list[float]] = {
        "discover_to_offer": [],
        "offer_to_request": [],
        "request_to_ack": [],
    }
    seq: list[tuple[str, float]] = []

    def flush() -> None:
        kinds = [k for k, _ in seq]
        if kinds[:4] == ["Request", "Reply", "Request", "Reply"]:
            t = [ts for _, ts in seq[:4]]
            out["discover_to_offer"].append((t[1] - t[0]) * 1000)
            out["offer_to_request"].append((t[2] - t[1]) * 1000)
            out["request_to_ack"].append((t[3] - t[2]) * 1000)
        seq.clear()

    current_mac: str | None = None
    for line in tcpdump_text.splitlines():
        m = _TCPDUMP.match(line.strip())
        if m is None:
            continue
        if m["kind"] == "Request" and m["mac"] != current_mac:
            if seq:
                flush()
            current_mac = m["mac"]
        seq.append((m["kind"], float(m["t"])))
    if seq:
        flush()
    return out


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- report -------------------------------------------------------------------------------


def _summary_row(label: str, values: Sequence[float], extra: Sequence[str] = ()) -> list[str]:
    s = Summary.of(values)
    if s is None:
        return [label, "0", "n/a", "n/a", "n/a", "n/a", *extra]
    return [
        label,
        str(s.n),
        fmt_ms(s.min),
        fmt_ms(s.median),
        fmt_ms(s.p90),
        fmt_ms(s.max),
        *extra,
    ]


_SUMMARY_HEAD = ("", "n", "min", "median", "p90", "max")


def _ratio_cell(ours: Sequence[float], ref: Sequence[float]) -> str:
    ratios = pair_ratios(ours, ref)
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.3f}x (pairs: {min(ratios):.3f}x to {max(ratios):.3f}x)"


def _section_machine(meta: Mapping[str, Any]) -> str:
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    rows = [[k, str(v)] for k, v in machine.items()]
    rows += [[k, str(v)] for k, v in versions.items()]
    load = meta.get("load", {})
    rows.append(["load average at start (1/5/15 min)", str(load.get("start", "n/a"))])
    rows.append(["load average at end (1/5/15 min)", str(load.get("end", "n/a"))])
    others = meta.get("other_sandboxes", {})
    if others:
        rows.append(
            [
                "other cbd-* namespaces (concurrent test runs) at start / end",
                f"{others.get('start', '?')} / {others.get('end', '?')}",
            ]
        )
    root = meta.get("root_namespace")
    if root is not None:
        rows.append(["machine's own network namespace", str(root)])
    return "## Machine, versions, load\n\n" + md_table(("", ""), rows)


def _section_sequential(data: Mapping[str, Any]) -> str:
    seq = data.get("sequential", {})
    n = seq.get("iterations", "?")
    rows = []
    for op in ("add", "del"):
        ref = ok_times(seq.get(op, {}).get("reference", []))
        ours = ok_times(seq.get(op, {}).get("ours", []))
        fails_ref = failures(seq.get(op, {}).get("reference", []))
        fails_ours = failures(seq.get(op, {}).get("ours", []))
        rows.append(_summary_row(f"reference {op.upper()}", ref, [str(fails_ref), ""]))
        rows.append(
            _summary_row(f"ours {op.upper()}", ours, [str(fails_ours), _ratio_cell(ours, ref)])
        )
    bare = data.get("bare_dhcp", {})
    bare_fail = bare.get("failures", {})
    for key, label in (
        ("udhcpc", "udhcpc, bare DHCP exchange"),
        ("udhcpc_arp100", "udhcpc -a100 (+100 ms ARP check, like ours)"),
    ):
        fails = bare_fail.get(key, []) if isinstance(bare_fail, dict) else []
        rows.append(_summary_row(label, bare.get(key, []), [str(len(fails)), ""]))
    text = (
        f"## Sequential ADD and DEL, dnsmasq `--no-ping` (headline)\n\n"
        f"{n} of each per plugin, alternating reference/ours (order flipped every pair), each "
        "timed around one `cnitool add|del` exec in the node namespace (libcni exec, plugin, "
        "daemon). Ratio: ours/reference per back-to-back pair, median and range. udhcpc runs "
        "in a pod namespace plugged straight into the LAN bridge, in both LANs, interleaved "
        "with the ADDs, with a fresh MAC each time.\n\n"
        + md_table((*_SUMMARY_HEAD, "failures", "ours/reference"), rows)
    )
    wire = bare.get("wire", {})
    if any(wire.get(k) for k in ("discover_to_offer", "request_to_ack")):
        wrows = [
            _summary_row("server: DISCOVER -> OFFER", wire.get("discover_to_offer", [])),
            _summary_row("udhcpc: OFFER -> REQUEST", wire.get("offer_to_request", [])),
            _summary_row("server: REQUEST -> ACK", wire.get("request_to_ack", [])),
        ]
        text += (
            "\n\nThe wire floor (tcpdump in the udhcpc namespaces): dnsmasq answers in about a "
            "millisecond; most of udhcpc's time is its own.\n\n" + md_table(_SUMMARY_HEAD, wrows)
        )
    left = seq.get("leases_left", {})
    if left:
        lrows = [
            [side, str(v.get("added", "?")), str(v.get("left", "?"))] for side, v in left.items()
        ]
        text += (
            "\n\nLeases still held at dnsmasq after the DELs (addresses handed out by the "
            "ADDs above):\n\n" + md_table(("plugin", "leased by ADD", "left after DEL"), lrows)
        )
    warm = data.get("warmup", {})
    if warm:
        wrows2 = [
            [side, fmt_ms(v.get("add_ms")), fmt_ms(v.get("del_ms"))] for side, v in warm.items()
        ]
        text += (
            "\n\nFirst ADD/DEL on a fresh node (not in the statistics; ours includes the uplink "
            "takeover and firewall setup):\n\n"
            + md_table(("plugin", "first ADD", "first DEL"), wrows2)
        )
    return text


def _step_rows(
    steps: Mapping[str, Mapping[str, float]], labels: Mapping[str, str]
) -> list[list[str]]:
    rows = []
    for key, label in labels.items():
        values = [float(s[key]) for s in steps.values() if key in s]
        rows.append(_summary_row(label, values))
    return rows


ADD_LABELS = {
    "to_offer": "request in -> OFFER (config, bridge, firewall, veth, DISCOVER, server)",
    "offer_to_ack": "OFFER -> ACK",
    "arp_probe": "ACK -> ARP probe verdict (the 100 ms probe starts at the OFFER)",
    "after_arp": "ARP done -> answer (addresses, routes, firewall, journal)",
    "total": "agent total",
    "outside_agent": "outside the agent (cnitool + plugin exec + socket)",
}
DEL_LABELS = {
    "to_released": "request in -> lease released (DHCPRELEASE sent)",
    "after_release": "released -> answer (pod link, firewall rules, journal)",
    "total": "agent total",
    "outside_agent": "outside the agent (cnitool + plugin exec + socket)",
}


def _cpu_per_op(records: Sequence[Mapping[str, Any]]) -> float | None:
    values = [float(r["daemon_cpu_ms"]) for r in records if "daemon_cpu_ms" in r]
    return sum(values) / len(values) if values else None


def machine_cpu_rows(data: Mapping[str, Any]) -> list[list[str]]:
    """Per sequential op: median CPU of its exec tree (nsenter, cnitool, the plugin and, for
    the reference, its dhcp plugin exec), and that plus the daemon's mean."""
    rows = []
    seq = data.get("sequential", {})
    for op in ("add", "del"):
        row = [f"sequential {op.upper()}"]
        totals = []
        for side in ("reference", "ours"):
            recs = seq.get(op, {}).get(side, [])
            tree = _median([float(r["exec_cpu_ms"]) for r in recs if "exec_cpu_ms" in r])
            daemon = _cpu_per_op(recs)
            row.append(fmt_ms(tree))
            totals.append(None if tree is None or daemon is None else tree + daemon)
        if row[1:] != [fmt_ms(None)] * 2:
            rows.append(row + [fmt_ms(t) for t in totals])
    return rows


def daemon_cpu_rows(data: Mapping[str, Any]) -> list[list[str]]:
    """Mean daemon CPU per operation, sequential and per concurrent batch."""
    rows = []
    seq = data.get("sequential", {})
    for op in ("add", "del"):
        ref = _cpu_per_op(seq.get(op, {}).get("reference", []))
        ours = _cpu_per_op(seq.get(op, {}).get("ours", []))
        if ref is not None or ours is not None:
            rows.append([f"sequential {op.upper()}", fmt_ms(ref), fmt_ms(ours)])
    by_n: dict[tuple[int, str], dict[str, float | None]] = {}
    for run in data.get("concurrent", []):
        for op in ("add", "del"):
            rec = run.get(op, {})
            total = rec.get("daemon_cpu_ms")
            count = len(rec.get("ops", []))
            if total is None or not count:
                continue
            by_n.setdefault((int(run.get("n", 0)), op), {})[str(run.get("side"))] = total / count
    for (n, op), sides in sorted(by_n.items()):
        rows.append(
            [
                f"{n} concurrent {op.upper()}",
                fmt_ms(sides.get("reference")),
                fmt_ms(sides.get("ours")),
            ]
        )
    return rows


def _section_breakdown(data: Mapping[str, Any]) -> str:
    steps: Mapping[str, Mapping[str, Mapping[str, float]]] = data.get("agent_steps", {})
    if not steps.get("add") and not steps.get("del"):
        return ""
    text = (
        "## Where our time goes\n\nFrom the agent's log (1 ms timestamps); `outside the "
        "agent` is the cnitool wall time minus the agent's own figure. The ADD milestones "
        "(OFFER, ACK, ARP verdict) are debug lines: those ADDs ran sequentially on an agent "
        "of their own at debug level in a sandbox of their own (the headline agent runs at "
        "info, as the DaemonSet does). The DEL rows are the sequential DELs above.\n\nADD:\n\n"
        + md_table(_SUMMARY_HEAD, _step_rows(steps.get("add", {}), ADD_LABELS))
    )
    add = steps.get("add", {})
    no_arp = [float(s["wall"]) - float(s["arp_probe"]) for s in add.values() if "wall" in s]
    bare = _median(data.get("bare_dhcp", {}).get("udhcpc", []))
    if no_arp and bare is not None:
        text += (
            f"\n\nOur ADD wall time minus the wait for the ARP verdict after the ACK: median "
            f"{fmt_ms(_median(no_arp))}, against {fmt_ms(bare)} for a bare udhcpc exchange."
        )
    if steps.get("del"):
        text += "\n\nDEL:\n\n" + md_table(_SUMMARY_HEAD, _step_rows(steps["del"], DEL_LABELS))
    cpu_rows = daemon_cpu_rows(data)
    if cpu_rows:
        text += (
            "\n\nDaemon CPU per operation (user+system time of the agent / reference dhcp "
            "daemon over the operations, from /proc, 10 ms ticks; plugin and cnitool processes "
            "not included). When the agent's CPU per op times N approaches its in-agent time, "
            "concurrent operations queue on the agent's one core (GIL).\n\n"
            + md_table(("operations", "reference daemon", "our agent"), cpu_rows)
        )
    machine = machine_cpu_rows(data)
    if machine:
        text += (
            "\n\nThe machine's CPU per operation: the exec tree (nsenter, cnitool, the plugin "
            "and, for the reference, the dhcp plugin it execs; getrusage of the reaped "
            "children, median) plus the daemon's figure above. N operations at once on this "
            "machine's cores need about N times the total.\n\n"
            + md_table(
                (
                    "operations",
                    "reference exec tree",
                    "our exec tree",
                    "reference total",
                    "our total",
                ),
                machine,
            )
        )
    retries = data.get("reference_retries", {})
    if retries:
        waits = retries.get("waits_ms", [])
        text += (
            f"\n\nReference dhcp daemon over the warm-up and sequential ADDs: {len(waits)} "
            f'backoff retries ("network is down": the pod link is still down when it first '
            f"sends) in {retries.get('adds', '?')} ADDs, median wait {fmt_ms(_median(waits))}, "
            f"total {fmt_ms(sum(waits))}."
        )
    return text


def _section_concurrent(data: Mapping[str, Any]) -> str:
    runs = data.get("concurrent", [])
    if not runs:
        return ""
    rows = []
    for run in runs:
        for op in ("add", "del"):
            rec = run.get(op, {})
            ops = rec.get("ops", [])
            times = ok_times(ops)
            s = Summary.of(times)
            rows.append(
                [
                    str(run.get("n")),
                    str(run.get("side")),
                    op.upper(),
                    f"{len(times)}/{len(ops)}",
                    fmt_ms(s.median if s else None),
                    fmt_ms(s.p99 if s else None),
                    fmt_ms(s.max if s else None),
                    fmt_ms(rec.get("wall_ms")),
                    fmt_ms(_median(rec.get("agent_ms", []))),
                    _server_cell(rec.get("server")),
                ]
            )
    text = (
        "## Concurrent ADDs then DELs, dnsmasq `--no-ping`\n\nAll N cnitool execs released "
        "together (a barrier), per-op latency from its own start; wall = first start to last "
        "end. p99 of few samples is close to the max. `in agent`: median of the agent's own 'in X s' "
        "figure for those operations (ours only). NAK/DECLINE: what the LAN's dnsmasq logged "
        "during the batch (a DECLINE follows an ARP probe that saw the address in use).\n\n"
        + md_table(
            ("N", "plugin", "op", "ok", "median", "p99", "max", "wall", "in agent", "NAK/DECLINE"),
            rows,
        )
    )
    errors = [
        f"- {run.get('side')} {op.upper()} x{run.get('n')}: {e}"
        for run in runs
        for op in ("add", "del")
        for e in sorted(
            {str(o.get("error")) for o in run.get(op, {}).get("ops", []) if not o.get("ok")}
        )
    ]
    if errors:
        text += "\n\nFailures:\n" + "\n".join(errors)
    ctx = data.get("rss_context", {})
    if ctx:
        crow = [
            [k, fmt_mb(v.get("rss_kb")), str(v.get("fds", "?")), str(v.get("threads", "?"))]
            for k, v in ctx.items()
        ]
        text += (
            "\n\nDaemons right after the largest concurrent ADD batch (leases held):\n\n"
            + md_table(("daemon", "RSS", "open fds", "threads"), crow)
        )
    return text


def _server_cell(server: Mapping[str, int] | None) -> str:
    return "" if not server else f"{server.get('naks', 0)}/{server.get('declines', 0)}"


def _section_exec(data: Mapping[str, Any]) -> str:
    exec_ = data.get("exec", {})
    if not exec_:
        return ""
    rows = [_summary_row(name, values) for name, values in exec_.items()]
    return (
        "## Plugin exec cost\n\nEach exec runs in the node namespace via `nsenter --net` with a "
        "node runtime's PATH (`/usr/sbin:/usr/bin:/sbin:/bin`); the `nsenter true` row is that "
        "wrapper's own cost. Round trips are requests that reach the daemon and do nothing: "
        "STATUS (ours, 1.1.0) and DEL of an unknown container (both).\n\n"
        + md_table(_SUMMARY_HEAD, rows)
    )


def _section_ping(data: Mapping[str, Any]) -> str:
    ping = data.get("ping_check", {})
    if not ping:
        return ""
    rows = []
    for op in ("add", "del"):
        ref = ok_times(ping.get(op, {}).get("reference", []))
        ours = ok_times(ping.get(op, {}).get("ours", []))
        rows.append(_summary_row(f"reference {op.upper()}", ref, [""]))
        rows.append(_summary_row(f"ours {op.upper()}", ours, [_ratio_cell(ours, ref)]))
    return (
        "## Sequential ADD and DEL, dnsmasq default ping check\n\ndnsmasq restarted in both "
        "LANs without `--no-ping` (it pings an address ~3 s before offering it; same for "
        "both plugins); fresh client ids, so every ADD pays the check.\n\n"
        + md_table((*_SUMMARY_HEAD, "ours/reference"), rows)
    )


def _section_resources(data: Mapping[str, Any]) -> str:
    res = data.get("resources", {})
    levels = res.get("levels", [])
    if not levels:
        note = res.get("note")
        return f"## Agent resources\n\n{note}" if note else ""
    rows = []
    for lv in levels:
        renewals = lv.get("renewals")
        cpu_ms = lv.get("cpu_ms")
        per = (
            f"{cpu_ms / renewals:.1f} ms"
            if isinstance(renewals, int) and renewals > 0 and cpu_ms is not None
            else "n/a"
        )
        rows.append(
            [
                str(lv.get("leases")),
                fmt_mb(lv.get("rss_kb")),
                fmt_mb(lv.get("hwm_kb")),
                "n/a" if lv.get("cpu_pct") is None else f"{lv['cpu_pct']:.2f}%",
                str(renewals if renewals is not None else "n/a"),
                per,
                str(lv.get("fds", "n/a")),
                str(lv.get("threads", "n/a")),
                f"{lv.get('window_s', '?')} s",
                str(lv.get("load_after", "?")).split(" ")[0],
            ]
        )
    text = (
        f"## Agent resources with leases held and renewing\n\nisc-dhcp-server, "
        f"{res.get('lease_seconds', '?')} s leases (renew every "
        f"{res.get('lease_seconds', 0) // 2} s), agent at log level "
        f"{res.get('log_level', '?')}. CPU = user+system time of the agent over the window "
        "(renewals counted from the server's DHCPACK log lines in that window).\n\n"
        + md_table(
            (
                "leases",
                "RSS",
                "peak RSS",
                "CPU (one core)",
                "renewals",
                "CPU per renewal",
                "open fds",
                "threads",
                "window",
                "load (1 min) after",
            ),
            rows,
        )
    )
    batches = res.get("batches", [])
    if batches:
        errors = sorted({e for b in batches for e in b.get("errors", [])})
        brows = [
            [
                str(b.get("op")),
                str(b.get("count")),
                f"{b.get('failures')}"
                + (
                    f" ({b['failed_after_retries']} after 2 retries)"
                    if b.get("failures") and "failed_after_retries" in b
                    else ""
                ),
                fmt_ms(b.get("wall_ms")),
                fmt_ms(_median(b.get("ms", []))),
            ]
            for b in batches
        ]
        text += (
            f"\n\nGetting there (ADD/DEL batches, {res.get('batch', 10)} at a time):\n\n"
            + md_table(("op", "pods", "failures", "wall", "per-op median"), brows)
        )
        if errors:
            text += "\n\nFailures:\n" + "\n".join(f"- {e}" for e in errors)
    note = res.get("note")
    if note:
        text += f"\n\n{note}"
    return text


def other_runs(netns_names: Iterable[str], mine: Iterable[str]) -> int:
    """How many ``cbd-*`` namespaces belong to other test runs; ``mine`` holds this run's
    sandbox prefixes, whose lan, node, pod and bare-client namespaces all start with them."""
    prefixes = tuple(f"{m}-" for m in mine)
    return sum(1 for n in netns_names if n.startswith("cbd-") and not n.startswith(prefixes))


def busy_warning(meta: Mapping[str, Any]) -> str | None:
    """A warning when the machine was not quiet: latencies are then inflated for both."""
    reasons = []
    try:
        cpus = int(str(meta.get("machine", {}).get("CPUs (nproc)", "0")))
    except ValueError:
        cpus = 0
    load = meta.get("load", {})
    for when in ("start", "end"):
        first = str(load.get(when, "")).split(" ")[0]
        try:
            value = float(first)
        except ValueError:
            continue
        if cpus and value > cpus / 2:
            reasons.append(f"load {value:g} at {when} on {cpus} CPUs")
    others = meta.get("other_sandboxes", {})
    busiest = max((int(v) for v in others.values() if isinstance(v, int)), default=0)
    if busiest:
        reasons.append(f"up to {busiest} other cbd-* namespaces (other test runs)")
    if not reasons:
        return None
    return (
        "The machine was busy during this run (" + "; ".join(reasons) + "): absolute "
        "latencies are inflated for both plugins; the per-pair ratios suffer least."
    )


def render_report(data: Mapping[str, Any], targets: str = "", extra: Sequence[str] = ()) -> str:
    """The whole markdown report for one run's data (as stored in the JSON): ``targets``
    right after the head, ``extra`` sections before the machine table."""
    meta = data.get("meta", {})
    head = (
        "# Benchmark: cni-bridge-dhcp vs reference bridge + dhcp\n\n"
        f"Run {meta.get('started', '?')}, {meta.get('duration_s', '?')} s, "
        f"{'quick smoke run' if meta.get('quick') else 'full run'}: `{meta.get('command', 'make bench')}`. "
        "One fixture shape for both: a `lan` namespace (bridge + dnsmasq with identical flags: "
        f"`{meta.get('dnsmasq_flags', '?')}`) and a `node` namespace whose eth0 is bridged "
        "into `cni0` (by hand for the reference, by our uplink takeover for ours), a separate "
        "pair of namespaces per plugin, driven by the same libcni client (`build/cnitool`, "
        "libcni 1.1.2, cniVersion 1.0.0). Reference: Debian's containernetworking-plugins "
        "`bridge` + `dhcp daemon` (own socket via `ipam.daemonSocketPath`). Ours: the "
        "`make binary` zipapp in CNI_PATH + the agent from the venv. Pod names and container "
        f"ids are unique per op. Raw samples: `{meta.get('json_file', 'results/bench-<time>.json')}` "
        "(results/ is not committed)."
    )
    busy = busy_warning(meta)
    if busy:
        head += f"\n\n> **{busy}**"
    sections = [
        head,
        targets,
        _section_sequential(data),
        _section_breakdown(data),
        _section_concurrent(data),
        _section_exec(data),
        _section_ping(data),
        _section_resources(data),
        *extra,
        _section_machine(meta),
    ]
    notes = data.get("notes", [])
    if notes:
        sections.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    sections.append(
        "## Reproduce\n\n`make bench` as root (about 15-20 minutes on 2 cores; "
        "`make bench BENCH_ARGS=--quick` for a ~3 min smoke run). Results: "
        "`results/bench-<time>.md` and `.json` and the pictures; a full run also refreshes "
        "`docs/BENCH.md` and `docs/bench-*.png`. `make soak` (about an hour) writes the soak "
        "result this report picks up. Everything runs in namespaces it creates and removes."
    )
    return "\n\n".join(s for s in sections if s) + "\n"
