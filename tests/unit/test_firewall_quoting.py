"""iptables-restore lines we write are read back by our save parser as the same rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cni_bridge_dhcp.agent.firewall.rules import (
    XRule,
    iptables_line,
    parse_iptables_line,
    split_iptables,
)


def test_iptables_save_escapes_are_undone() -> None:
    # what iptables-save prints for the comment  a'b"c\d
    line = '-A FORWARD -m comment --comment "a\\\'b\\"c\\\\d" -j CBD-X'
    parsed = parse_iptables_line(line)
    assert parsed == ("FORWARD", XRule(target="CBD-X", comment="a'b\"c\\d"))


def test_split_keeps_empty_quoted_and_refuses_open_quotes() -> None:
    assert split_iptables('-A X --comment "" -j Y') == ["-A", "X", "--comment", "", "-j", "Y"]
    try:
        split_iptables('-A X --comment "open')
    except ValueError:
        pass
    else:
        raise AssertionError("an open quote must not parse")


@given(comment=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1))
def test_written_rules_parse_back_equal(comment: str) -> None:
    rule = XRule(target="ACCEPT", comment=comment, iif="br0", src="192.168.77.5/32")
    assert parse_iptables_line(iptables_line("CBD-FORWARD", rule)) == ("CBD-FORWARD", rule)
