"""Names and comments derived from (network, container id, ifname)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from cni_bridge_dhcp.agent.firewall.model import (
    NFT_COMMENT_MAX,
    PodRules,
    comment_matches_network,
    decode_token,
    encode_token,
    parse_pod_comment,
    pod_chain,
    pod_comment,
)

CID = "3f1c" * 16  # 64 hex digits, like a containerd id
NAME = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,200}", fullmatch=True)
IFNAME = st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True)


def test_chain_name_is_deterministic_and_fits_iptables() -> None:
    chain = pod_chain("lan", CID, "eth0")
    assert chain == pod_chain("lan", CID, "eth0")
    assert chain.startswith("CBD-") and len(chain) == 14 <= 28
    assert chain != pod_chain("lan2", CID, "eth0")
    assert chain != pod_chain("lan", CID, "net1")
    assert chain != pod_chain("lan", CID[:-1] + "0", "eth0")


def test_pod_rules_use_the_same_names() -> None:
    pod = PodRules(
        "lan", CID, "eth0", "br0", "veth1", "02:00:00:00:00:01",
        (ipaddress.ip_interface("192.168.77.5/24"),), True, False,
    )  # fmt: skip
    assert pod.chain == pod_chain("lan", CID, "eth0")
    assert pod.comment == f"cni-bridge-dhcp: lan {CID} eth0"
    assert pod.key == (CID, "eth0")


def test_comment_identifies_the_pod_and_its_network() -> None:
    comment = pod_comment("lan", CID, "eth0")
    assert parse_pod_comment(comment) == ("lan", CID, "eth0")
    assert comment_matches_network(comment, "lan") == (CID, "eth0")
    assert comment_matches_network(comment, "lan2") is None


def test_shared_and_foreign_comments_are_not_pods() -> None:
    assert parse_pod_comment("cni-bridge-dhcp: bridge br0") is None
    assert parse_pod_comment("cni-bridge-dhcp: forward") is None
    assert parse_pod_comment("kube-proxy: lan abc eth0") is None
    assert parse_pod_comment(None) is None


@given(network=NAME, ifname=IFNAME)
def test_long_networks_still_fit_nftables_and_round_trip(network: str, ifname: str) -> None:
    comment = pod_comment(network, CID, ifname)
    assert len(comment.encode()) <= NFT_COMMENT_MAX
    assert comment_matches_network(comment, network) == (CID, ifname)


def test_two_long_networks_with_a_common_prefix_stay_apart() -> None:
    a, b = "n" * 80 + "a", "n" * 80 + "b"
    assert pod_comment(a, CID, "eth0") != pod_comment(b, CID, "eth0")
    assert comment_matches_network(pod_comment(a, CID, "eth0"), b) is None


# issue 12, item 2: names libcni accepts (anything but '/', ':', whitespace; <= 15 bytes)
ODD_IFNAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters="/:"),
    min_size=1,
    max_size=15,
).filter(
    lambda s: len(s.encode()) <= 15 and s not in (".", "..") and not any(c.isspace() for c in s)
)
SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-%~: ")


@given(ifname=ODD_IFNAME, network=NAME)
def test_comments_of_any_ifname_are_safe_fit_and_round_trip(ifname: str, network: str) -> None:
    comment = pod_comment(network, CID, ifname)
    assert set(comment) <= SAFE  # nothing any tool quotes, escapes or re-decodes
    assert len(comment.encode()) <= NFT_COMMENT_MAX
    chain = pod_chain(network, CID, ifname)
    assert comment_matches_network(comment, network, chain) == (CID, ifname)
    assert comment_matches_network(comment, network) == (CID, ifname)


@given(text=st.text(min_size=1, max_size=20))
def test_tokens_round_trip(text: str) -> None:
    assert decode_token(encode_token(text)) == text


def test_safe_names_keep_their_readable_comment() -> None:
    assert pod_comment("lan", CID, "eth0") == f"cni-bridge-dhcp: lan {CID} eth0"
    assert pod_comment("lan", CID, "a'b") == f"cni-bridge-dhcp: lan {CID} %612762"
    assert pod_comment("lan", CID, "%") == f"cni-bridge-dhcp: lan {CID} %25"


def test_comments_of_the_previous_format_are_recognised_by_their_chain() -> None:
    # raw, and as python-iptables / iptables-save + shlex read them back
    for seen in ("a'b", "a\\'b", "a\\\\'b"):
        comment = f"cni-bridge-dhcp: lan {CID} {seen}"
        assert comment_matches_network(comment, "lan", pod_chain("lan", CID, "a'b")) == (
            CID,
            "a'b",
        )
    # "%41" written raw by the old format is not mistaken for an encoded name
    old = f"cni-bridge-dhcp: lan {CID} %41"
    assert comment_matches_network(old, "lan", pod_chain("lan", CID, "%41")) == (CID, "%41")
    assert comment_matches_network(old, "lan", pod_chain("lan", CID, "A")) == (CID, "A")
    assert comment_matches_network(old, "lan", pod_chain("lan2", CID, "%41")) is None
