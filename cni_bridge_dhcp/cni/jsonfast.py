"""json.loads/json.dumps for the plugin's exec path, without importing the json package.

``import json`` costs ~4-5 ms per exec, about half the interpreter's own start: it imports
``re`` (and with it enum, functools, the regex compiler) and compiles its regexes, for
code the plugin never runs. The work itself is done by the C accelerators in ``_json``;
this module calls them with json's default settings, so every value decodes and encodes
to exactly what json gives. Anything else (no ``_json`` on this Python, invalid input,
trailing data, an object json cannot encode) is handed to json itself, which raises its
own error with its own message. Standard library only.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the exec path does not import typing (~1 ms)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# What json's decoder treats as whitespace around a document (json.decoder.WHITESPACE).
_WS = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _DecoderSettings:
    """The attributes _json.make_scanner reads, as json.JSONDecoder() sets them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


def _never_called(o: object) -> object:
    # the fast encoder's `default`: raising sends the value to json.dumps, which raises
    # json's own TypeError
    raise TypeError(type(o).__name__)


try:
    from _json import encode_basestring_ascii, make_encoder, make_scanner
except ImportError:  # pragma: no cover - not CPython: json alone
    _scan: Callable[[str, int], tuple[Any, int]] | None = None
    _fast_encode = False
else:
    _scan = make_scanner(_DecoderSettings())  # type: ignore[arg-type]  # duck-typed context
    _fast_encode = True


def loads(text: str) -> Any:
    """json.loads(text) for a str."""
    if _scan is not None:
        start = len(text) - len(text.lstrip(_WS))
        try:
            value, end = _scan(text, start)
        except Exception:
            # json.loads below reports it. Not just ValueError: the scanner raises its
            # errors through json.decoder.JSONDecodeError, and while json.decoder is not
            # imported (the point of this module) that is a SystemError instead.
            pass
        else:
            if end == len(text.rstrip(_WS)):
                return value
    import json

    return json.loads(text)


def dumps(value: object, separators: tuple[str, str] = (", ", ": ")) -> str:
    """json.dumps(value, separators=separators): ASCII, no indent, keys in insertion order."""
    if _fast_encode:
        item_sep, key_sep = separators
        # json.JSONEncoder.iterencode's call, a fresh circular-reference memo each time:
        # markers, default, encoder, indent, key/item separators, sort_keys, skipkeys,
        # allow_nan
        encode = make_encoder(
            {}, _never_called, encode_basestring_ascii, None, key_sep, item_sep,
            False, False, True,
        )  # fmt: skip
        try:
            if isinstance(value, str):
                return encode_basestring_ascii(value)
            return "".join(encode(value, 0))
        except Exception:  # json.dumps below reports it, in json's words
            pass
    import json

    return json.dumps(value, separators=separators)
