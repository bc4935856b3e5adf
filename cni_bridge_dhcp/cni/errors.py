"""CNI error codes and the one exception type that carries them to the error funnel.

Standard library only: imported on the plugin's exec path.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the exec path does not import typing (~1 ms)
if TYPE_CHECKING:
    from enum import IntEnum
else:
    # Every plugin exec imports this module, and enum costs ~1.5 ms (a sixth of the
    # interpreter's own start). The codes are only ever used as ints (CNIError takes an
    # int), so at run time they are plain int class attributes; mypy checks them as the
    # IntEnum they read as. Nothing may rely on enum behaviour (ErrorCode(3), .name,
    # iteration); tests/unit/test_plugin_boundary.py checks that VERSION loads no enum.
    IntEnum = object


class ErrorCode(IntEnum):
    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENV = 4
    IO_FAILURE = 5
    DECODE_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    STATUS_UNAVAILABLE = 50
    STATUS_NO_IPAM = 51
    # Plugin-specific codes (>= 100), documented in the README.
    DHCP_TIMEOUT = 100
    DHCP_NAK = 101
    UPLINK_FAILED = 102
    FIREWALL_FAILED = 103
    CHECK_DRIFT = 104
    STATE_FAILED = 105
    IPAM_DELEGATE_FAILED = 106
    INTERNAL = 999


class CNIError(Exception):
    """An error that reaches the runtime as CNI error JSON.

    ``msg`` is short and names the bad key/value; ``details`` adds context for humans.
    Tracebacks never go into either: they go to the log.
    """

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, object]:
        out: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __repr__(self) -> str:
        return f"CNIError({self.code}, {self.msg!r}, {self.details!r})"
