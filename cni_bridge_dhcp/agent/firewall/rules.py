"""One neutral rule shape, rendered to (and parsed from) iptables and nftables JSON.

Only the handful of matches the plugin itself writes are modelled. A rule with anything
else is parsed with ``extra=True`` so it never compares equal to a rule we would write:
we can see it, count it, and leave it alone.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field
from typing import Any

# CONTINUE: no verdict (a rule that only sets the mark)
STANDARD_TARGETS = frozenset({"ACCEPT", "DROP", "RETURN", "MASQUERADE", "CONTINUE"})
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}


def norm_net(text: str) -> str:
    """``192.168.77.5``, ``192.168.77.5/255.255.255.255`` -> ``192.168.77.5/32``."""
    return str(ipaddress.ip_network(text, strict=False))


def norm_ctstate(text: str) -> str:
    return ",".join(sorted(s.strip().upper() for s in text.split(",") if s.strip()))


@dataclass(frozen=True)
class XRule:
    target: str  # ACCEPT/DROP/RETURN/MASQUERADE or a chain to jump to
    comment: str | None = None
    iif: str | None = None
    oif: str | None = None
    src: str | None = None  # normalised network, e.g. 192.168.77.5/32
    dst: str | None = None
    ctstate: str | None = None  # normalised, e.g. ESTABLISHED,RELATED
    ether_src_ne: str | None = None  # bridge family: drop unless this source MAC
    mark_set: int | None = None  # nftables: meta mark set meta mark | this
    mark_has: int | None = None  # nftables: meta mark & this == this
    extra: bool = False  # carries matches we do not model
    handle: int | None = field(default=None, compare=False)  # nftables rule handle

    @property
    def family(self) -> int | None:
        for net in (self.src, self.dst):
            if net:
                return ipaddress.ip_network(net).version
        return None

    def is_jump(self) -> bool:
        return self.target not in STANDARD_TARGETS


# --------------------------------------------------------------------------- iptables


def to_iptables_args(rule: XRule) -> list[str]:
    """Arguments after ``-A CHAIN``, in the order iptables-save prints them."""
    if rule.extra or rule.ether_src_ne or rule.mark_set or rule.mark_has:
        raise ValueError(f"rule cannot be written as iptables: {rule}")
    args: list[str] = []
    if rule.src:
        args += ["-s", rule.src]
    if rule.dst:
        args += ["-d", rule.dst]
    if rule.iif:
        args += ["-i", rule.iif]
    if rule.oif:
        args += ["-o", rule.oif]
    if rule.ctstate:
        args += ["-m", "conntrack", "--ctstate", rule.ctstate]
    if rule.comment:
        args += ["-m", "comment", "--comment", rule.comment]
    args += ["-j", rule.target]
    return args


def iptables_line(chain: str, rule: XRule, op: str = "-A") -> str:
    return " ".join([op, shlex.quote(chain), *(_quote(a) for a in to_iptables_args(rule))])


def _quote(arg: str) -> str:
    # iptables-restore splits on whitespace, groups with double quotes and takes the
    # character after a backslash literally; quote and escape as iptables-save does.
    if arg and all(c.isalnum() or c in "-_./:,=+" for c in arg):
        return arg
    return '"' + "".join("\\" + c if c in "\\\"'" else c for c in arg) + '"'


def split_iptables(line: str) -> list[str]:
    """Tokens of an iptables-save line, as iptables-restore reads them.

    Not shlex: iptables-save writes ``a'b`` as ``"a\\'b"``, which shlex keeps as
    ``a\\'b`` (inside double quotes it only unescapes ``\\`` and ``"``), so the rule
    read back would never equal the rule written.
    """
    tokens: list[str] = []
    cur: list[str] = []
    quoted = escaped = started = False
    for c in line:
        if escaped:
            cur.append(c)
            escaped = False
        elif c == "\\":
            escaped = started = True
        elif c == '"':
            quoted = not quoted
            started = True
        elif c.isspace() and not quoted:
            if started:
                tokens.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(c)
            started = True
    if quoted or escaped:
        raise ValueError(f"unterminated quote or escape in {line!r}")
    if started:
        tokens.append("".join(cur))
    return tokens


def parse_iptables_line(line: str) -> tuple[str, XRule] | None:
    """``-A CHAIN ...`` from iptables-save -> (chain, rule); None for other lines."""
    if not line.startswith("-A "):
        return None
    try:
        tokens = split_iptables(line)
    except ValueError:
        return None
    chain = tokens[1]
    fields: dict[str, Any] = {}
    extra = False
    target = ""
    i = 2
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in ("-s", "-d", "-i", "-o") and nxt:
            key = {"-s": "src", "-d": "dst", "-i": "iif", "-o": "oif"}[tok]
            fields[key] = norm_net(nxt) if key in ("src", "dst") else nxt
            i += 2
        elif tok == "-m" and nxt in ("conntrack", "comment"):
            i += 2
        elif tok == "--ctstate" and nxt:
            fields["ctstate"] = norm_ctstate(nxt)
            i += 2
        elif tok == "--comment":
            fields["comment"] = nxt
            i += 2
        elif tok in ("-j", "-g") and nxt:
            target = nxt
            extra = extra or tok == "-g"
            i += 2
        else:
            extra = True
            i += 1
    return chain, XRule(target=target or "", extra=extra, **fields)


# --------------------------------------------------------------------------- nftables


def _payload(net: str, field_name: str) -> dict[str, Any]:
    n = ipaddress.ip_network(net)
    proto = "ip" if n.version == 4 else "ip6"
    right: Any = str(n.network_address)
    if n.prefixlen != n.max_prefixlen:
        right = {"prefix": {"addr": str(n.network_address), "len": n.prefixlen}}
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": proto, "field": field_name}},
            "right": right,
        }
    }


def _meta(key: str, value: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": value}}


def to_nft_expr(rule: XRule) -> list[dict[str, Any]]:
    if rule.extra:
        raise ValueError(f"rule cannot be written as nftables: {rule}")
    expr: list[dict[str, Any]] = []
    if rule.iif:
        expr.append(_meta("iifname", rule.iif))
    if rule.oif:
        expr.append(_meta("oifname", rule.oif))
    if rule.src:
        expr.append(_payload(rule.src, "saddr"))
    if rule.dst:
        expr.append(_payload(rule.dst, "daddr"))
    if rule.ctstate:
        states = [s.lower() for s in rule.ctstate.split(",")]
        expr.append({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": states}})
    if rule.ether_src_ne:
        expr.append(
            {
                "match": {
                    "op": "!=",
                    "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                    "right": rule.ether_src_ne,
                }
            }
        )
    mark: dict[str, Any] = {"meta": {"key": "mark"}}
    if rule.mark_has is not None:
        left = {"&": [mark, rule.mark_has]}
        expr.append({"match": {"op": "==", "left": left, "right": rule.mark_has}})
    if rule.mark_set is not None:
        expr.append({"mangle": {"key": mark, "value": {"|": [mark, rule.mark_set]}}})
    verdict = rule.target
    if verdict == "CONTINUE":
        pass
    elif verdict in ("ACCEPT", "DROP", "RETURN", "MASQUERADE"):
        expr.append({verdict.lower(): None})
    else:
        expr.append({"jump": {"target": verdict}})
    return expr


def _net_from_right(right: Any) -> str | None:
    if isinstance(right, str):
        return norm_net(right)
    if isinstance(right, dict) and isinstance(right.get("prefix"), dict):
        p = right["prefix"]
        return norm_net(f"{p.get('addr')}/{p.get('len')}")
    return None


def from_nft_rule(obj: dict[str, Any]) -> XRule:
    """Parse a ``rule`` object of ``nft -j list`` output."""
    fields: dict[str, Any] = {}
    extra = False
    target = ""
    for item in obj.get("expr", []):
        if not isinstance(item, dict) or len(item) != 1:
            extra = True
            continue
        (kind, body), *_ = item.items()
        if kind == "counter":
            continue
        if kind in ("accept", "drop", "return", "masquerade") and body is None:
            target = kind.upper()
            continue
        if kind == "jump" and isinstance(body, dict):
            target = str(body.get("target", ""))
            continue
        if kind == "mangle" and isinstance(body, dict) and "mark_set" not in fields:
            bit = _mark_or(body)
            if bit is not None:
                fields["mark_set"] = bit
                continue
        if kind == "match" and isinstance(body, dict):
            bit = _mark_and(body)
            if bit is not None and "mark_has" not in fields:
                fields["mark_has"] = bit
                continue
            parsed = _parse_match(body)
            if parsed is not None:
                key, value = parsed
                if key not in fields:
                    fields[key] = value
                    continue
        extra = True
    comment = obj.get("comment")
    handle = obj.get("handle")
    if not target and "mark_set" in fields:
        target = "CONTINUE"
    return XRule(
        target=target,
        comment=comment if isinstance(comment, str) else None,
        extra=extra,
        handle=handle if isinstance(handle, int) else None,
        **fields,
    )


_MARK = {"meta": {"key": "mark"}}


def _mark_and(body: dict[str, Any]) -> int | None:
    """``meta mark & BIT == BIT`` -> BIT."""
    left, right = body.get("left"), body.get("right")
    if body.get("op") != "==" or not isinstance(left, dict) or not isinstance(right, int):
        return None
    operands = left.get("&")
    if isinstance(operands, list) and operands == [_MARK, right]:
        return right
    return None


def _mark_or(body: dict[str, Any]) -> int | None:
    """``meta mark set meta mark | BIT`` -> BIT."""
    value = body.get("value")
    if body.get("key") != _MARK or not isinstance(value, dict):
        return None
    operands = value.get("|")
    if isinstance(operands, list) and len(operands) == 2 and operands[0] == _MARK:
        bit = operands[1]
        return bit if isinstance(bit, int) else None
    return None


def _parse_match(body: dict[str, Any]) -> tuple[str, str] | None:
    op, left, right = body.get("op"), body.get("left"), body.get("right")
    if not isinstance(left, dict):
        return None
    meta = left.get("meta")
    if op == "==" and isinstance(meta, dict) and isinstance(right, str):
        if meta.get("key") == "iifname":
            return "iif", right
        if meta.get("key") == "oifname":
            return "oif", right
        return None
    payload = left.get("payload")
    if isinstance(payload, dict):
        proto, fld = payload.get("protocol"), payload.get("field")
        if op == "==" and proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
            net = _net_from_right(right)
            return ("src" if fld == "saddr" else "dst", net) if net else None
        if op == "!=" and proto == "ether" and fld == "saddr" and isinstance(right, str):
            return "ether_src_ne", right.lower()
        return None
    ct = left.get("ct")
    if op in ("in", "==") and isinstance(ct, dict) and ct.get("key") == "state":
        states = right if isinstance(right, list) else [right]
        if all(isinstance(s, str) for s in states):
            return "ctstate", norm_ctstate(",".join(str(s) for s in states))
    return None
