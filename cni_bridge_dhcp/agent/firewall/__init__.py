"""Firewall rules that keep pods working under DROP forward policies.

Backends: ``iptables`` (legacy xtables via python-iptables), ``nftables`` (iptables-nft
tables via iptables-nft-restore, native tables and our own tables via libnftables JSON)
and ``none``. ``Firewall`` is the facade the agent uses; see ``facade`` for selection.
"""

from .facade import Firewall, NoneBackend, detect_backends, enable_forwarding, make_backend
from .model import FirewallBackend, PodRules, pod_chain, pod_comment

__all__ = [
    "Firewall",
    "FirewallBackend",
    "NoneBackend",
    "PodRules",
    "detect_backends",
    "enable_forwarding",
    "make_backend",
    "pod_chain",
    "pod_comment",
]
