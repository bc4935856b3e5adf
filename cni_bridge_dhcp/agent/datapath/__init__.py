"""Node and pod kernel objects: network namespaces, netlink sockets, bridge, veth, pod addresses and routes."""
