"""Defects the contract run found in the route code, held until fixed (strict xfail: a fix turns them red).

Each test states the answer the document promises; the reason says what the gateway does today.
When the lead fixes one, its test passes, strict xfail reports XPASS as a failure, and the marker goes.
"""

from __future__ import annotations

import json

import pytest

from tests.api_contract.conftest import Gateway, Sessions

PROBLEM = "application/problem+json"


def assert_problem(status: int, headers: dict[str, str], body: bytes, expected: set[int]) -> None:
    assert status in expected, (status, body[:300])
    assert headers["content-type"].startswith(PROBLEM)
    assert json.loads(body)["status"] == status


@pytest.mark.xfail(
    strict=True,
    reason="gateway/daemon.py _reset_device raises CommandFailed (gateway.remote), which "
    "gateway/api/errors.py to_problem does not map: the route answers 500 internal",
)
def test_reset_of_unknown_device_is_404(gateway: Gateway, sessions: Sessions) -> None:
    tech = sessions.technician()
    reply = gateway.request(
        "POST", f"/v1/sessions/{tech.id}/maintenance/devices/nope/reset", token=tech.token
    )
    assert_problem(reply.status, reply.headers, reply.body, {404})
    assert reply.json()["type"].endswith("/device-not-found")


CONVERT = "read_json: msgspec.convert raises UnicodeEncodeError -> 500"

# (route under the session or "", session kind, raw JSON body with a lone UTF-16 surrogate escape)
SURROGATE_BODIES = [
    pytest.param(
        "",
        None,
        b'{"kind": "\\ud800"}',
        marks=pytest.mark.xfail(strict=True, reason=CONVERT),
        id="create-session-kind",
    ),
    pytest.param(
        "",
        None,
        b'{"\\ud800": 1}',
        marks=pytest.mark.xfail(strict=True, reason=CONVERT),
        id="create-session-unknown-field",
    ),
    pytest.param(
        "print",
        "citizen",
        b'{"lines": [], "qr": "\\ud800"}',
        marks=pytest.mark.xfail(
            strict=True, reason="print: encoding the qr as UTF-8 raises UnicodeEncodeError, not caught -> 500"
        ),
        id="print-qr",
    ),
    pytest.param(
        "transactions",
        "citizen",
        b'{"service": "x", "data": {"\\ud800": 1}}',
        marks=pytest.mark.xfail(
            strict=True, reason="transaction: msgspec.json.encode(body.data) raises UnicodeEncodeError -> 500"
        ),
        id="transaction-data-key",
    ),
    pytest.param(
        "factors/totp",
        "technician",
        b'{"code": "123456", "staff_id": "\\ud800"}',
        marks=pytest.mark.xfail(
            strict=True,
            reason="the staff_id reaches the audit record, which cannot be sealed: 503 storage-unavailable "
            "(a server fault for a client's bad input, with an internal error text in `detail`)",
        ),
        id="totp-staff-id",
    ),
]


@pytest.mark.parametrize(("route", "kind", "body"), SURROGATE_BODIES)
def test_lone_surrogate_in_a_body_is_a_client_error(
    gateway: Gateway, sessions: Sessions, route: str, kind: str | None, body: bytes
) -> None:
    """JSON may escape a lone surrogate (\\ud800); it is not text, so the answer is 400 or 422."""
    if kind is None:
        reply = gateway.request("POST", "/v1/sessions", body=body)
    else:
        live = sessions.technician() if kind == "technician" else sessions.citizen()
        reply = gateway.request("POST", f"/v1/sessions/{live.id}/{route}", body=body, token=live.token)
    assert_problem(reply.status, reply.headers, reply.body, {400, 422})


def test_deeply_nested_json_is_400(gateway: Gateway, sessions: Sessions) -> None:
    """Found by this run (json.loads' RecursionError escaped as a 500); now fixed in read_json."""
    live = sessions.citizen()
    body = b"[" * 100_000  # 100 kB, well under api.max_body_bytes
    reply = gateway.request("POST", f"/v1/sessions/{live.id}/print", body=body, token=live.token)
    assert_problem(reply.status, reply.headers, reply.body, {400})
