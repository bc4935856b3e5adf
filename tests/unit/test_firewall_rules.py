"""Rule rendering and parsing against output captured from iptables 1.8.9 and nft 1.0.6."""

from __future__ import annotations

import shlex

import pytest

from cni_bridge_dhcp.agent.firewall.rules import (
    XRule,
    from_nft_rule,
    iptables_line,
    parse_iptables_line,
    to_iptables_args,
    to_nft_expr,
)

OURS = [
    XRule("CBD-FORWARD", "cni-bridge-dhcp: forward"),
    XRule("ACCEPT", "cni-bridge-dhcp: bridge br0", iif="br0", oif="br0"),
    XRule("ACCEPT", "cni-bridge-dhcp: from 192.168.77.101", iif="br0", src="192.168.77.101/32"),
    XRule(
        "ACCEPT",
        "cni-bridge-dhcp: to fd00::5",
        oif="br0",
        dst="fd00::5/128",
        ctstate="ESTABLISHED,RELATED",
    ),
    XRule("RETURN", "cni-bridge-dhcp: local 192.168.77.0/24", dst="192.168.77.0/24"),
    XRule("MASQUERADE", "cni-bridge-dhcp: masquerade"),
]

# iptables-nft-save / iptables-legacy-save output for rules the plugin wrote
SAVED = [
    (
        '-A FORWARD -m comment --comment "cni-bridge-dhcp: forward" -j CBD-FORWARD',
        OURS[0],
    ),
    (
        '-A CBD-FORWARD -i br0 -o br0 -m comment --comment "cni-bridge-dhcp: bridge br0" -j ACCEPT',
        OURS[1],
    ),
    (
        "-A CBD-1960298EB8 -d 192.168.77.101/32 -o br0 -m conntrack --ctstate RELATED,ESTABLISHED"
        ' -m comment --comment "cni-bridge-dhcp: to 192.168.77.101" -j ACCEPT',
        XRule(
            "ACCEPT",
            "cni-bridge-dhcp: to 192.168.77.101",
            oif="br0",
            dst="192.168.77.101/32",
            ctstate="ESTABLISHED,RELATED",
        ),
    ),
    (
        '-A CBD-1960298EB8 -m comment --comment "cni-bridge-dhcp: masquerade" -j MASQUERADE',
        OURS[5],
    ),
]


@pytest.mark.parametrize("rule", OURS, ids=lambda r: r.comment)
def test_iptables_rendering_round_trips(rule: XRule) -> None:
    parsed = parse_iptables_line(iptables_line("CBD-X", rule))
    assert parsed == ("CBD-X", rule)


@pytest.mark.parametrize(("line", "expected"), SAVED)
def test_iptables_save_output_parses_to_the_rule_we_write(line: str, expected: XRule) -> None:
    assert parse_iptables_line(line) == (shlex.split(line)[1], expected)


@pytest.mark.parametrize(
    "line",
    [
        "-A FORWARD -p tcp --dport 80 -j ACCEPT",
        "-A FORWARD ! -i br0 -j DROP",
        "-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT",
        "-A FORWARD -i br0 -g CBD-FORWARD",
    ],
)
def test_foreign_iptables_rules_are_marked_extra(line: str) -> None:
    parsed = parse_iptables_line(line)
    assert parsed is not None and parsed[1].extra


def test_non_rule_lines_are_ignored() -> None:
    assert parse_iptables_line(":FORWARD DROP [0:0]") is None
    assert parse_iptables_line("*filter") is None


ISOLATION = [
    XRule("CONTINUE", "cni-bridge-dhcp: isolated", iif="veth1", mark_set=0x2000),
    XRule("DROP", "cni-bridge-dhcp: isolated", oif="veth1", mark_has=0x2000),
]


@pytest.mark.parametrize(
    "rule", [*OURS, XRule("DROP", "m", ether_src_ne="02:00:00:00:00:01"), *ISOLATION]
)
def test_nft_rendering_round_trips(rule: XRule) -> None:
    obj = {"expr": to_nft_expr(rule), "comment": rule.comment, "handle": 7}
    parsed = from_nft_rule(obj)
    assert parsed == rule
    assert parsed.handle == 7


def test_nft_list_output_parses() -> None:
    # from `nft -j list ruleset` after the plugin added a pod (inet and bridge tables)
    listed = [
        {
            "family": "inet",
            "table": "hostfw",
            "chain": "CBD-1960298EB8",
            "handle": 9,
            "comment": "cni-bridge-dhcp: to 192.168.77.101",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "br0"}},
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "right": "192.168.77.101",
                    }
                },
                {
                    "match": {
                        "op": "in",
                        "left": {"ct": {"key": "state"}},
                        "right": ["established", "related"],
                    }
                },
                {"accept": None},
            ],
        },
        {
            "family": "inet",
            "table": "cni-bridge-dhcp",
            "chain": "CBD-1960298EB8",
            "handle": 4,
            "expr": [
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "right": {"prefix": {"addr": "192.168.77.0", "len": 24}},
                    }
                },
                {"return": None},
            ],
        },
        {
            "family": "bridge",
            "table": "b",
            "chain": "c",
            "handle": 2,
            "expr": [
                {
                    "match": {
                        "op": "!=",
                        "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                        "right": "02:00:00:00:00:01",
                    }
                },
                {"drop": None},
            ],
        },
    ]
    rules = [from_nft_rule(obj) for obj in listed]
    assert rules[0] == XRule(
        "ACCEPT",
        "cni-bridge-dhcp: to 192.168.77.101",
        oif="br0",
        dst="192.168.77.101/32",
        ctstate="ESTABLISHED,RELATED",
    )
    assert rules[1] == XRule("RETURN", None, dst="192.168.77.0/24")
    assert rules[2] == XRule("DROP", None, ether_src_ne="02:00:00:00:00:01")


def test_iptables_nft_compat_expressions_are_extra() -> None:
    rule = from_nft_rule(
        {
            "expr": [
                {"xt": {"type": "match", "name": "comment"}},
                {"counter": {"packets": 0, "bytes": 0}},
                {"jump": {"target": "CBD-FORWARD"}},
            ]
        }
    )
    assert rule.extra and rule.target == "CBD-FORWARD"


def test_bridge_rules_cannot_be_written_as_iptables() -> None:
    with pytest.raises(ValueError, match="iptables"):
        to_iptables_args(XRule("DROP", ether_src_ne="02:00:00:00:00:01"))


def test_nft_mark_rules_parse_from_list_output() -> None:
    # `nft -j list` of `iifname "veth1" meta mark set meta mark | 0x2000` and
    # `oifname "veth1" meta mark & 0x2000 == 0x2000 drop`
    mark = {"meta": {"key": "mark"}}
    set_rule = {
        "comment": "cni-bridge-dhcp: isolated",
        "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth1"}},
            {"mangle": {"key": mark, "value": {"|": [mark, 8192]}}},
        ],
    }
    drop_rule = {
        "comment": "cni-bridge-dhcp: isolated",
        "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "veth1"}},
            {"match": {"op": "==", "left": {"&": [mark, 8192]}, "right": 8192}},
            {"drop": None},
        ],
    }
    assert [from_nft_rule(set_rule), from_nft_rule(drop_rule)] == ISOLATION
    # another mark expression is not ours
    other = {"expr": [{"mangle": {"key": mark, "value": 5}}]}
    assert from_nft_rule(other).extra


def test_mark_rules_have_no_iptables_form() -> None:
    with pytest.raises(ValueError):
        to_iptables_args(ISOLATION[0])
