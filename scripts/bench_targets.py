"""Issue 16's targets against one `make bench` run, and the report sections they need.

Pure like bench_stats (numbers in, markdown out): the exec floor, the veth-delete floor,
agent CPU per operation, concurrency 1..50, 200 pods 20 at a time, udhcpc -a100, the CRI
calls, ADD with `arpProbeWait: 0`, the soak and the pictures, each read from the run's JSON.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench_stats import (
    fmt_mb,
    fmt_ms,
    md_table,
    ok_times,
    percentile,
)

EXEC_FLOOR = "python3 -I -S -c pass"
EXEC_CASES = ("zipapp VERSION", "zipapp STATUS (agent)", "zipapp DEL unknown (agent)")
# the ADD breakdown (bars of the picture, rows of the table): key in agent_steps -> label
ADD_SEGMENTS = {
    "exec": "plugin exec (zipapp VERSION median)",
    "socket": "cnitool + socket + answer (rest of outside-agent)",
    "to_offer": "config, bridge/firewall checks, veth (netlink), DISCOVER -> OFFER",
    "offer_to_ack": "DHCP REQUEST -> ACK",
    "arp_probe": "ARP probe verdict after the ACK",
    "after_arp": "addresses, routes, SLAAC wait, firewall, journal",
}


@dataclass(frozen=True)
class Target:
    number: str
    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def p99(values: Sequence[float]) -> float | None:
    return percentile(values, 99) if values else None


def seq_times(data: Mapping[str, Any], op: str, side: str) -> list[float]:
    return ok_times(data.get("sequential", {}).get(op, {}).get(side, []))


def concurrent(data: Mapping[str, Any], n: int, side: str) -> Mapping[str, Any] | None:
    for run in data.get("concurrent", []):
        if run.get("n") == n and run.get("side") == side:
            found: Mapping[str, Any] = run
            return found
    return None


def cpu_per_op(data: Mapping[str, Any], op: str, side: str) -> float | None:
    """Mean daemon CPU (ms) per sequential ``op``, from /proc/<pid>/stat deltas."""
    recs = data.get("sequential", {}).get(op, {}).get(side, [])
    values = [float(r["daemon_cpu_ms"]) for r in recs if "daemon_cpu_ms" in r]
    return sum(values) / len(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _t1_exec(data: Mapping[str, Any]) -> Target:
    ms = data.get("exec_floor", {}).get("ms", {})
    floor = median(ms.get(EXEC_FLOOR, []))
    parts, ok = [], True
    for case in EXEC_CASES:
        ratio = _ratio(median(ms.get(case, [])), floor)
        if ratio is None:
            return Target("1", "exec: VERSION, STATUS, DEL unknown", "each <= 2.0x", "n/a", None)
        parts.append(f"{case.removeprefix('zipapp ')} {ratio:.2f}x")
        ok = ok and ratio <= 2.0
    return Target(
        "1",
        "exec: VERSION, STATUS, DEL unknown",
        f"each <= 2.0x `{EXEC_FLOOR}`",
        f"{'; '.join(parts)} (floor {fmt_ms(floor)})",
        ok,
    )


def _t2_del(data: Mapping[str, Any]) -> Target:
    ours, ref = median(seq_times(data, "del", "ours")), median(seq_times(data, "del", "reference"))
    left = data.get("sequential", {}).get("leases_left", {}).get("ours")
    veth = median(data.get("veth_floor", {}).get("ip link del (veth pair)", []))
    ratio = _ratio(ours, ref)
    if ratio is None or left is None:
        return Target("2", "DEL median vs reference", "<= 1.0x, 0 leases left", "n/a", None)
    return Target(
        "2",
        "DEL median vs reference",
        "<= 1.0x, 0 leases left",
        f"{fmt_ms(ours)} / {fmt_ms(ref)} = {ratio:.2f}x; {left.get('left')}/"
        f"{left.get('added')} leases left; kernel floor (veth delete) {fmt_ms(veth)}",
        ratio <= 1.0 and left.get("left") == 0,
    )


def _t3(data: Mapping[str, Any]) -> list[Target]:
    out = []
    for op, limit in (("add", 12.0), ("del", 5.0)):
        ours, ref = cpu_per_op(data, op, "ours"), cpu_per_op(data, op, "reference")
        out.append(
            Target(
                "3",
                f"agent CPU per {op.upper()} (sequential)",
                f"<= {limit:.0f} ms",
                "n/a"
                if ours is None
                else f"{fmt_ms(ours)} (reference daemon {fmt_ms(ref)}; 10 ms ticks, mean)",
                None if ours is None else ours <= limit,
            )
        )
    for op, goal in (
        ("add", "0 failures, p99 <= 1.0 s and <= 0.35x reference p99"),
        ("del", "p99 <= 1.0x reference p99"),
    ):
        ours, ref = concurrent(data, 50, "ours"), concurrent(data, 50, "reference")
        name = f"50 concurrent {op.upper()}s"
        if ours is None or ref is None:
            out.append(Target("3", name, goal, "not measured (no 50-pod batch)", None))
            continue
        ops = ours.get(op, {}).get("ops", [])
        fails = sum(1 for o in ops if not o.get("ok"))
        mine, theirs = p99(ok_times(ops)), p99(ok_times(ref.get(op, {}).get("ops", [])))
        ratio = _ratio(mine, theirs)
        if op == "add":
            met = fails == 0 and mine is not None and mine <= 1000 and (ratio or 99) <= 0.35
        else:
            met = fails == 0 and ratio is not None and ratio <= 1.0
        cost = ""
        if op == "del" and "machine_cpu_ms" in ours.get(op, {}) and "machine_cpu_ms" in ref[op]:
            cost = (
                f"; machine CPU per DEL {fmt_ms(ours[op]['machine_cpu_ms'] / 50)} vs "
                f"{fmt_ms(ref[op]['machine_cpu_ms'] / 50)}"
            )
        out.append(
            Target(
                "3",
                name,
                goal,
                f"{fails} failures, p99 {fmt_ms(mine)} vs {fmt_ms(theirs)} = "
                f"{'n/a' if ratio is None else f'{ratio:.2f}x'}{cost}",
                met,
            )
        )
    batch = next(
        (b for b in data.get("resources", {}).get("batches", []) if b.get("op") == "ADD to 250"),
        None,
    )
    width = data.get("resources", {}).get("batch", "?")
    if batch is None:
        out.append(Target("3", "200 pods, 20 at a time", "0 failures", "not measured", None))
    else:
        out.append(
            Target(
                "3",
                f"{batch.get('count')} pods, {width} at a time",
                "0 failures (200 pods, 20 at a time)",
                f"{batch.get('failures')} failures, wall {fmt_ms(batch.get('wall_ms'))}",
                batch.get("failures") == 0 and batch.get("count") == 200 and width == 20,
            )
        )
    return out


def _t4_cri(data: Mapping[str, Any]) -> Target:
    ms = data.get("cri", {}).get("ms", {})
    cells = []
    for call, label in (("run", "RunPodSandbox"), ("stop", "StopPodSandbox")):
        ours, ref = (
            median(ms.get("ours", {}).get(call, [])),
            median(ms.get("reference", {}).get(call, [])),
        )
        if ours is None or ref is None:
            return Target("4", "containerd CRI medians", "reported", "not measured", None)
        cells.append(f"{label} {fmt_ms(ours)} vs {fmt_ms(ref)} ({ours / ref:.2f}x)")
    return Target(
        "4", "containerd CRI medians", "ours vs reference, same run", "; ".join(cells), True
    )


def _t5(data: Mapping[str, Any]) -> list[Target]:
    out = []
    ours, ref = median(seq_times(data, "add", "ours")), median(seq_times(data, "add", "reference"))
    ratio = _ratio(ours, ref)
    out.append(
        Target(
            "5",
            "ADD median vs reference",
            "<= 0.2x",
            "n/a" if ratio is None else f"{fmt_ms(ours)} / {fmt_ms(ref)} = {ratio:.3f}x",
            None if ratio is None else ratio <= 0.2,
        )
    )
    arp = median(data.get("bare_dhcp", {}).get("udhcpc_arp100", []))
    out.append(
        Target(
            "5",
            "ADD median vs `udhcpc -a100`",
            "<= udhcpc doing the same ARP probe",
            "n/a" if ours is None or arp is None else f"{fmt_ms(ours)} vs {fmt_ms(arp)}",
            None if ours is None or arp is None else ours <= arp,
        )
    )
    level = next(
        (
            lv
            for lv in data.get("resources", {}).get("levels", [])
            if lv.get("target_leases") == 250
        ),
        None,
    )
    rss = None if level is None else level.get("rss_kb")
    cpu = None if level is None else level.get("cpu_pct")
    held = "" if level is None or level.get("leases") == 250 else f" ({level.get('leases')} held)"
    out.append(
        Target(
            "5",
            "agent RSS, 250 leases",
            "< 60 MB",
            fmt_mb(rss) + held,
            None if rss is None else rss / 1024 < 60,
        )
    )
    out.append(
        Target(
            "5",
            "agent CPU renewing 250 leases",
            "< 2% of a core",
            "n/a" if cpu is None else f"{cpu:.2f}%{held}",
            None if cpu is None else cpu < 2,
        )
    )
    return out


def _t6_fast(data: Mapping[str, Any]) -> Target:
    runs = data.get("fast_add", {})
    first = runs.get("arpProbeWait 0")
    add = median(ok_times(first.get("add", []))) if first else None
    others = [
        f"{name}: {fmt_ms(median(ok_times(r.get('add', []))))}"
        for name, r in runs.items()
        if name != "arpProbeWait 0"
    ]
    return Target(
        "6",
        "(stretch) ADD median, `ipam.arpProbeWait: 0`",
        "<= 60 ms end to end",
        "n/a" if add is None else fmt_ms(add) + (f" ({'; '.join(others)})" if others else ""),
        None if add is None else add <= 60,
    )


def _t7_soak(data: Mapping[str, Any]) -> Target:
    soak = data.get("soak")
    if not soak:
        return Target("7", "RSS growth over 20,000 ADD/DEL cycles", "< 5 MiB", "no soak run", None)
    cycles = soak.get("measured_cycles", 0)
    return Target(
        "7",
        "RSS growth over 20,000 ADD/DEL cycles",
        "< 5 MiB after warm-up",
        f"+{soak.get('rss_growth_kib')} KiB over {cycles} cycles "
        f"({soak.get('second_half', 'no trend')}; `{soak.get('file', '?')}`, "
        f"{soak.get('time', '?')})",
        None if cycles < 20000 else soak.get("rss_growth_kib", 1 << 30) < 5 * 1024,
    )


def _t8_pictures(data: Mapping[str, Any]) -> Target:
    pics = data.get("pictures", [])
    shown = ", ".join(f"`{p}`" for p in pics) if pics else "none made (matplotlib missing?)"
    # A picture can be drawn with a bar missing: the breakdown needs this run's ADD steps
    # (from the agent's log), or it shows only "before".
    after = bool(add_breakdown(data))
    if pics and not after:
        shown += "; no ADD breakdown from this run (agent log lines not found)"
    both = {"bench-concurrency.png", "bench-add-breakdown.png"} <= set(pics)
    return Target(
        "8",
        "pictures beside the tables",
        "concurrency p50/p99, ADD breakdown before/after",
        shown,
        (both and after) if "pictures" in data else None,
    )


def evaluate(data: Mapping[str, Any]) -> list[Target]:
    """Issue 16's targets 1-8 against this run's numbers (met / not met / not measured)."""
    return [
        _t1_exec(data),
        _t2_del(data),
        *_t3(data),
        _t4_cri(data),
        *_t5(data),
        _t6_fast(data),
        _t7_soak(data),
        _t8_pictures(data),
    ]


def _met(flag: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[flag]


def section_targets(data: Mapping[str, Any]) -> str:
    rows = [[t.number, t.name, t.goal, t.measured, _met(t.met)] for t in evaluate(data)]
    return "## Targets (issue 16)\n\nAll from this one run except the soak (its own file).\n\n" + (
        md_table(("#", "target", "goal", "this run", "result"), rows)
    )


# -- sections ---------------------------------------------------------------------------------


def _stat_rows(samples: Mapping[str, Sequence[float]], floor: float | None) -> list[list[str]]:
    rows = []
    for name, values in samples.items():
        med = median(values)
        ratio = _ratio(med, floor)
        rows.append(
            [
                name,
                str(len(values)),
                fmt_ms(min(values) if values else None),
                fmt_ms(med),
                fmt_ms(p99(values)),
                "" if ratio is None else f"{ratio:.2f}x",
            ]
        )
    return rows


def section_floors(data: Mapping[str, Any]) -> str:
    floor = data.get("exec_floor", {})
    veth = data.get("veth_floor", {})
    if not floor and not veth:
        return ""
    text = "## Floors: the interpreter's start and the kernel's veth delete\n\n"
    if floor:
        ms = floor.get("ms", {})
        text += (
            "Execs run straight (no nsenter, a node's PATH), interleaved so load hits every "
            "case alike (`scripts/exec-floor.py`'s cases); ratio to the median of "
            f"`{EXEC_FLOOR}`.\n\n"
            + md_table(
                ("", "n", "min", "median", "p99", "x floor"),
                _stat_rows(ms, median(ms.get(EXEC_FLOOR, []))),
            )
        )
        imports = floor.get("importtime", {})
        if imports:
            text += "\n\n`-X importtime` of each zipapp path, top entries by self time:\n\n```\n"
            for case, lines in imports.items():
                text += f"{case}:\n" + "\n".join(lines) + "\n"
            text += "```"
    if veth:
        text += (
            "\n\nThe kernel floor of a DEL: deleting one veth pair in the node namespace "
            "(`ip -n node link del`), against `ip -n node link show lo` (ip's own exec).\n\n"
            + md_table(("", "n", "min", "median", "p99", ""), _stat_rows(veth, None))
        )
    return text


def section_concurrency(data: Mapping[str, Any]) -> str:
    rows = []
    levels = sorted({int(r.get("n", 0)) for r in data.get("concurrent", [])})
    for n in levels:
        for side in ("reference", "ours"):
            run = concurrent(data, n, side)
            if run is None:
                continue
            cells = [str(n), side]
            for op in ("add", "del"):
                times = ok_times(run.get(op, {}).get("ops", []))
                cells += [fmt_ms(median(times)), fmt_ms(p99(times))]
            rows.append(cells)
    if not rows:
        return ""
    pic = "bench-concurrency.png"
    return (
        "## ADD and DEL against concurrency\n\nN execs released together (see the concurrent "
        f"table below for failures and walls).\n\n![p50/p99 against N]({pic})\n\n"
        + md_table(("N", "plugin", "ADD p50", "ADD p99", "DEL p50", "DEL p99"), rows)
        + section_del_cost(data, levels)
    )


def section_del_cost(data: Mapping[str, Any], levels: list[int]) -> str:
    """What N DELs at once cost the machine, split by who paid: when every CPU is busy
    for the whole burst, the last DEL ends when all of it is paid."""
    rows = []
    cpus = 1
    for n in (n for n in levels if n >= 10):  # below that, /proc/stat's 10 ms ticks blur it
        for side in ("reference", "ours"):
            run = concurrent(data, n, side)
            dels = (run or {}).get("del", {})
            if "machine_cpu_ms" not in dels:
                continue
            cpus = int(dels.get("cpus", 1))
            machine, execs = float(dels["machine_cpu_ms"]), float(dels["exec_cpu_ms"])
            daemon = float(dels.get("daemon_cpu_ms", 0.0))
            rows.append(
                [
                    str(n),
                    side,
                    fmt_ms(machine / n),
                    fmt_ms(execs / n),
                    fmt_ms(daemon / n),
                    fmt_ms((machine - execs - daemon) / n),
                    fmt_ms(machine / cpus),
                    fmt_ms(p99(ok_times(dels.get("ops", [])))),
                ]
            )
    if not rows:
        return ""
    return (
        "\n\nWhat the DELs cost the machine, per DEL: all CPUs busy during the burst "
        "(/proc/stat, without steal; 10 ms ticks, so from 10 DELs on), the exec trees the "
        "bench reaped (nsenter, cnitool, the plugin execs), the daemon (10 ms ticks), and the "
        "rest (the DHCP server, kernel threads, the bench's own threads). "
        f"'machine / {cpus} CPUs' is how long the burst takes if every CPU is busy all "
        "along; where the p99 is close to it, the machine's CPU is what bounds the burst.\n\n"
        + md_table(
            (
                "N",
                "plugin",
                "machine",
                "exec trees",
                "daemon",
                "rest",
                f"machine / {cpus} CPUs",
                "DEL p99",
            ),
            rows,
        )
    )


def add_breakdown(data: Mapping[str, Any], steps_key: str = "") -> dict[str, float]:
    """Median ms of each ADD segment (ADD_SEGMENTS) over the sequential (or fast) ADDs."""
    steps = (
        data.get("fast_add", {}).get(steps_key, {}).get("steps", {})
        if steps_key
        else data.get("agent_steps", {}).get("add", {})
    )
    if not steps:
        return {}
    version = median(data.get("exec", {}).get("ours VERSION", [])) or 0.0
    out: dict[str, float] = {}
    for key in ("to_offer", "offer_to_ack", "arp_probe", "after_arp"):
        out[key] = statistics.median(float(s[key]) for s in steps.values())
    outside = statistics.median(float(s["outside_agent"]) for s in steps.values())
    out["exec"] = min(version, outside)
    out["socket"] = outside - out["exec"]
    return {k: round(out[k], 2) for k in ADD_SEGMENTS}


def section_breakdown(data: Mapping[str, Any], before: Mapping[str, float] | None) -> str:
    now = add_breakdown(data)
    if not now:
        return ""
    fast = add_breakdown(data, "arpProbeWait 0")
    cols = [("before", before or {}), ("this run", now), ("this run, arpProbeWait 0", fast)]
    cols = [(name, v) for name, v in cols if v]
    rows = [[label, *(fmt_ms(v.get(key)) for _, v in cols)] for key, label in ADD_SEGMENTS.items()]
    rows.append(["sum", *(fmt_ms(sum(v.values())) for _, v in cols)])
    return (
        "## Where one ADD's time goes, before and after\n\nMedians per segment over "
        "sequential ADDs on an agent of their own at debug level (its OFFER, ACK and ARP "
        "lines, 1 ms stamps) and the cnitool wall; 'before' is `docs/bench-before.json` (the "
        "quick run on main before issue 16's work).\n\n"
        "![ADD breakdown](bench-add-breakdown.png)\n\n"
        + md_table(("segment", *(name for name, _ in cols)), rows)
    )


def section_fast(data: Mapping[str, Any]) -> str:
    runs = data.get("fast_add", {})
    if not runs:
        return ""
    rows = []
    for name, run in runs.items():
        for op in ("add", "del"):
            times = ok_times(run.get(op, []))
            fails = sum(1 for r in run.get(op, []) if not r.get("ok"))
            rows.append([name, op.upper(), str(len(times)), fmt_ms(median(times)), str(fails)])
    return (
        "## Our ADD without the ARP probe (target 6)\n\nSequential ADD/DEL on our side with "
        "`ipam.arpProbeWait: 0` (and also `ipam.ipv6: off`, which skips the wait for a router "
        "advertisement on this IPv4-only LAN), same sandbox, after the headline phase.\n\n"
        + md_table(("netconf", "op", "n", "median", "failures"), rows)
    )


def section_profile(data: Mapping[str, Any]) -> str:
    prof = data.get("agent_profile", {})
    top = prof.get("top", [])
    if not top:
        return ""
    rows = [[str(r[0]), str(r[1]), f"{r[2]:.1f}", f"{r[3]:.1f}"] for r in top]
    return (
        f"## Agent profile (cProfile)\n\nThe agent's event-loop thread under cProfile over "
        f"{prof.get('ops', '?')} sequential ADD/DEL pairs in a separate sandbox (cProfile "
        "slows it, so no timing is taken from it), after one unprofiled warm-up pair; "
        "functions by own time, the event loop's idle waits (epoll, lock acquire) left out. "
        "Other threads (netns work, ARP probe) are not in it: their cost shows in the agent's "
        "CPU per op.\n\n" + md_table(("function", "calls", "own ms", "cumulative ms"), rows)
    )


def section_soak(data: Mapping[str, Any]) -> str:
    soak = data.get("soak")
    if not soak:
        return (
            "## Soak (target 7)\n\nNo soak result in results/: `make soak` runs 20,000 ADD/DEL "
            "cycles (`scripts/soak.py`)."
        )
    keys = (
        "time",
        "measured_cycles",
        "duration_s",
        "cycles_per_s",
        "failures",
        "rss_growth_kib",
        "anon_growth_kib",
        "growth_bytes_per_cycle",
        "second_half",
        "agent_env",
    )
    rows = [[k, str(soak.get(k, "?"))] for k in keys]
    return (
        f"## Soak (target 7)\n\nThe newest `make soak` result (`{soak.get('file', '?')}`): "
        "RSS growth of the agent from the end of the warm-up to the last sample, and over "
        "the second half of the samples. Fresh pod names every cycle: the agent's address "
        "book (`state/addressbook.py`, up to 4,096 identities) fills during the first ~4,100 "
        "cycles and is a bounded part of the growth.\n\n" + md_table(("", ""), rows)
    )
