"""DHCPv6 (RFC 8415, stateful IA_NA) for pods: codec, the exchanges on a UDP socket in the
pod namespace, leases with RENEW/REBIND/RELEASE, their journal under ``leases6/``."""
