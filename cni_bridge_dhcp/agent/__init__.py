"""The warm agent: everything that needs root, netlink, DHCP and the firewall."""
