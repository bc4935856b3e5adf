"""cni-bridge-dhcp: a CNI bridge plugin that puts pods on the node's LAN via DHCP."""

__version__ = "0.1.0"
