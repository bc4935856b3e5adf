"""Default paths and the layout of the state directory, shared by plugin, agent and tools.

Each state-dir entry is written by one agent module; doctor and uplink restore read them.
Stdlib only.
"""

from __future__ import annotations

DEFAULT_SOCKET = "/run/cni-bridge-dhcp/agent.sock"
DEFAULT_STATE_DIR = "/var/lib/cni-bridge-dhcp"

# Entries of the state directory.
ATTACHMENTS_DIR = "attachments"  # agent/state/attachments.py: one record per attachment
LEASES_DIR = "leases"  # agent/dhcp/journal.py: one lease per file
ADDRESS_BOOK = "addressbook.json"  # agent/state/addressbook.py
UPLINK_JOURNAL = "uplink.json"  # agent/uplink/journal.py: the takeover journal
DHCP_SERVERS = "dhcp-servers.json"  # agent/dhcp/servermacs.py: learned server MACs
LEASES6_DIR = "leases6"  # agent/dhcp/v6/lease.py: one DHCPv6 lease per file
ADDRESS_BOOK6 = "addressbook6.json"  # agent/dhcp/v6/hints.py: last DHCPv6 address per DUID
