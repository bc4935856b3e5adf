"""Name rules shared by the exec plugin, the agent, the operator tools and the installer.

One definition each: the kernel's interface-name rule (net/core/dev.c dev_valid_name),
the container-id rule of libcni, and the MAC address syntax. Callers phrase their own
error (which key, which error code); the rule itself lives only here. Stdlib only.
"""

from __future__ import annotations

from .errors import CNIError, ErrorCode

TYPE_CHECKING = False  # not typing's: the exec path does not import typing (~1 ms)
if TYPE_CHECKING:
    import re

# The kernel's name buffer, NUL included: a name has at most IFNAMSIZ - 1 characters.
IFNAMSIZ = 16
MAX_IFNAME = IFNAMSIZ - 1

# libcni's container id rule (pkg/utils.ValidateContainerID), also its network name rule
# (libcni ValidateNetworkName): ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$ in Go, where $ is the end of
# the text. Checked without re: importing re costs ~4 ms on every plugin exec.
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")
_PATTERNS = {
    "CONTAINER_ID": r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z",
    "MAC": r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",  # aa:bb:cc:dd:ee:ff, either case
}


def __getattr__(name: str) -> re.Pattern[str]:
    """CONTAINER_ID and MAC, compiled on first use (the agent's config checks MACs)."""
    if name not in _PATTERNS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import re

    pattern = globals()[name] = re.compile(_PATTERNS[name])
    return pattern


def valid_cni_name(name: str) -> bool:
    """libcni's rule for a container id and a network name."""
    return bool(name) and name[0] in _ALNUM and all(c in _NAME_CHARS for c in name)


def ifname_problem(name: str) -> str | None:
    """Why the kernel would refuse ``name`` as an interface name, or None if it is valid.

    The reason reads after the quoted name: f"{key} {name!r} {problem}".
    """
    if not name:
        return "is empty"
    if len(name) > MAX_IFNAME:
        return f"is longer than {MAX_IFNAME} characters"
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        return "is not a valid interface name"
    return None


def valid_ifname(name: str) -> bool:
    return ifname_problem(name) is None


# The CNI_IFNAME and CNI_CONTAINERID checks: the plugin runs them before asking the agent,
# and the agent again (it does not trust its socket peers blindly).
def validate_ifname(name: str) -> None:
    if not name:
        raise CNIError(ErrorCode.INVALID_ENV, "CNI_IFNAME is not set")
    problem = ifname_problem(name)
    if problem:
        raise CNIError(ErrorCode.INVALID_ENV, f"CNI_IFNAME {name!r} {problem}")
    if "%" in name:
        # libcni lets it through, but the kernel takes it as a template ("e%d" becomes "e0")
        raise CNIError(
            ErrorCode.INVALID_ENV,
            f"CNI_IFNAME {name!r} is not a valid interface name: "
            "the kernel treats '%' as a name template",
        )


def validate_container_id(cid: str) -> None:
    if not cid:
        raise CNIError(ErrorCode.INVALID_ENV, "CNI_CONTAINERID is not set")
    if not valid_cni_name(cid):
        raise CNIError(
            ErrorCode.INVALID_ENV,
            f"CNI_CONTAINERID {cid!r} is invalid",
            "it must start with a letter or digit and contain only letters, digits, '_', '.', '-'",
        )
