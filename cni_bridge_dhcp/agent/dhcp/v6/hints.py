"""The last DHCPv6 address of each pod identity (DUID), asked for again (an IA_NA address
hint in SOLICIT) when the pod is re-created: servers that do not keep a released lease for
its client (Kea 2.2) would otherwise hand out the pool's next address. Only hints: a file
that does not load is set aside (``*.corrupt``) and the hints start empty; one that cannot
be written is logged, never fatal.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from pathlib import Path

from ....cni.defaults import ADDRESS_BOOK6
from ...state.addressbook import HintBook


class AddressHints6(HintBook[IPv6Address]):
    """The DHCPv4 address book's code, keyed by DUID, in its own file."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, ADDRESS_BOOK6, IPv6Address, "DHCPv6 address hints")
