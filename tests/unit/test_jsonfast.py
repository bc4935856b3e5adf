"""cni/jsonfast.py gives exactly json.loads/json.dumps, values and errors alike."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from cni_bridge_dhcp.cni import jsonfast

DOCUMENTS = [
    '{"cniVersion":"1.0.0"}',
    '  {"a": [1, 2.5, -3e10, true, false, null, "\\u00e9\\n\\"x\\""], "b": {}}\n\t',
    '{"a": 1, "a": 2}',
    "[]",
    '"just a string"',
    "12",
    "[NaN, Infinity, -Infinity]",
    '{"deep": ' + "[" * 50 + "]" * 50 + "}",
    '{"k\\ud83d\\ude00": "caf\u00e9 \U0001f600"}',
]
BAD = [
    "",
    "   ",
    "{oops",
    '{"a": 1} x',
    "[1,",
    '{"a" 1}',
    "\ufeff{}",
    '"tab\there"',
    "[" * 100_000,
    "nul",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_loads_equals_json(text: str) -> None:
    got, want = jsonfast.loads(text), json.loads(text)
    assert json.dumps(got) == json.dumps(want)  # NaN != NaN: compare their encodings
    assert type(got) is type(want)


def _error(call: object, *args: object) -> tuple[type[BaseException], str]:
    try:
        call(*args)  # type: ignore[operator]
    except BaseException as exc:  # comparing whatever each raises
        return type(exc), str(exc)
    raise AssertionError(f"{args!r} did not fail")


@pytest.mark.parametrize("text", BAD)
def test_loads_fails_exactly_like_json(text: str) -> None:
    assert _error(jsonfast.loads, text) == _error(json.loads, text)


def test_loads_reports_json_errors_before_json_is_imported() -> None:
    # the C scanner raises through json.decoder, which nothing has imported yet here
    code = (
        "import sys\n"
        "from cni_bridge_dhcp.cni import jsonfast\n"
        "assert 'json.decoder' not in sys.modules\n"
        "try:\n    jsonfast.loads('{oops')\n"
        "except ValueError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == (
        "JSONDecodeError Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    )


VALUES: list[object] = [
    {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "1.1.0"]},
    {"msg": 'caf\u00e9 \U0001f600 "q" \\ \n', "code": 11, "f": 1.5, "n": None, "t": True},
    [1, -2, 3.25e-8, math.inf, -math.inf, [], {}, [{}]],
    {1: "int key", 2.5: "float key", None: "null key", False: "bool key"},
    "a string",
    42,
    (1, 2),
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")])
def test_dumps_equals_json(value: object, separators: tuple[str, str]) -> None:
    assert jsonfast.dumps(value, separators) == json.dumps(value, separators=separators)


def test_dumps_fails_exactly_like_json() -> None:
    circular: list[object] = []
    circular.append(circular)
    for value in ({"a": object()}, {(1, 2): "tuple key"}, circular, {"s": {1, 2}}):
        assert _error(jsonfast.dumps, value) == _error(json.dumps, value)
    # and a failure leaves nothing behind: the next call encodes normally
    assert jsonfast.dumps({"a": [1]}) == '{"a": [1]}'
