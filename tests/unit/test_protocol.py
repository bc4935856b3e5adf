"""Wire protocol: framing, strict request decoding, error transport."""

from __future__ import annotations

import json

import pytest

from cni_bridge_dhcp.cni.errors import CNIError
from cni_bridge_dhcp.cni.wire import (
    MAX_MESSAGE,
    error_response,
    frame,
    frame_length,
    make_request,
    ok_response,
    parse_request,
    parse_response,
)


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def good() -> dict[str, object]:
    return make_request(
        "ADD",
        "1.0.0",
        {"containerId": "c", "netns": "/n", "ifname": "eth0", "path": "/p", "args": {}},
        {"name": "x"},
        False,
    )


def test_request_round_trip() -> None:
    data = frame(good())
    assert frame_length(data[:4]) == len(data) - 4
    assert parse_request(data[4:]) == good()


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda r: r.update(extra=1), 6),
        (lambda r: r.update(v=2), 1),
        (lambda r: r.update(op="REBOOT"), 6),
        (lambda r: r["env"].update(shell="rm"), 6),
        (lambda r: r.update(env=[]), 6),
        (lambda r: r["env"].update(containerId=5), 6),
        (lambda r: r["env"].update(args={"a": 1}), 6),
        (lambda r: r.update(config="x"), 6),
        (lambda r: r.update(netnsFd="yes"), 6),
    ],
)
def test_malformed_requests_are_rejected(mutate, code) -> None:  # type: ignore[no-untyped-def]
    req = good()
    mutate(req)
    with pytest.raises(CNIError) as exc:
        parse_request(body(req))
    assert exc.value.code == code


@pytest.mark.parametrize("raw", [b"", b"\x00\x01", b"not json", b"[]", b"\xff"])
def test_garbage_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(CNIError) as exc:
        parse_request(raw)
    assert exc.value.code == 6


def test_oversize_frames_are_refused_before_reading() -> None:
    with pytest.raises(CNIError) as exc:
        frame_length((MAX_MESSAGE + 1).to_bytes(4, "big"))
    assert exc.value.code == 6


def test_responses() -> None:
    assert parse_response(body(ok_response({"a": 1}))) == {"a": 1}
    with pytest.raises(CNIError) as exc:
        parse_response(body(error_response(CNIError(100, "timeout", "d"))))
    assert (exc.value.code, exc.value.msg, exc.value.details) == (100, "timeout", "d")
    with pytest.raises(CNIError) as exc:
        parse_response(b'{"v": 9}')
    assert exc.value.code == 5
