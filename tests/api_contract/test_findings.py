"""Defects the contract run found in the route code, now fixed and held here as regression tests.

Each test states the answer the document promises; the comment says what the gateway used to do.
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


# Was: the reset raised an error to_problem did not map, so the route answered 500 internal.
def test_reset_of_unknown_device_is_404(gateway: Gateway, sessions: Sessions) -> None:
    tech = sessions.technician()
    reply = gateway.request(
        "POST", f"/v1/sessions/{tech.id}/maintenance/devices/nope/reset", token=tech.token
    )
    assert_problem(reply.status, reply.headers, reply.body, {404})
    assert reply.json()["type"].endswith("/device-not-found")


# Was: read_json, the QR encoder, the transaction size check and the audit sealer each met the
# surrogate as a UnicodeEncodeError (500, or 503 storage-unavailable). read_json now refuses it.
# (route under the session or "", session kind, raw JSON body with a lone UTF-16 surrogate escape)
SURROGATE_BODIES = [
    pytest.param(
        "",
        None,
        b'{"kind": "\\ud800"}',
        id="create-session-kind",
    ),
    pytest.param(
        "",
        None,
        b'{"\\ud800": 1}',
        id="create-session-unknown-field",
    ),
    pytest.param(
        "print",
        "citizen",
        b'{"lines": [], "qr": "\\ud800"}',
        id="print-qr",
    ),
    pytest.param(
        "transactions",
        "citizen",
        b'{"service": "x", "data": {"\\ud800": 1}}',
        id="transaction-data-key",
    ),
    pytest.param(
        "factors/totp",
        "technician",
        b'{"code": "123456", "staff_id": "\\ud800"}',
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


def test_requeue_needs_a_technician_with_two_factors_and_validates_its_body(
    gateway: Gateway, sessions: Sessions
) -> None:
    path = "/v1/sessions/{}/maintenance/outbox/requeue"
    citizen = sessions.citizen()
    reply = gateway.request("POST", path.format(citizen.id), token=citizen.token)
    assert_problem(reply.status, reply.headers, reply.body, {403})
    bare = sessions.create("technician")
    reply = gateway.request("POST", path.format(bare.id), token=bare.token)
    assert_problem(reply.status, reply.headers, reply.body, {403})

    tech = sessions.technician()
    reply = gateway.request("POST", path.format(tech.id), token=tech.token)
    assert reply.status == 200, reply.body
    assert reply.json() == {"requeued": {}, "total": 0}, "nothing was parked"
    body = json.dumps({"stream": "audit", "seqs": [1, 2]}).encode()
    reply = gateway.request("POST", path.format(tech.id), body=body, token=tech.token)
    assert reply.status == 200, reply.body
    for bad in ({"seqs": [1]}, {"stream": "nope"}, {"stream": "tx", "seqs": [0]}, {"what": 1}):
        reply = gateway.request("POST", path.format(tech.id), body=json.dumps(bad).encode(), token=tech.token)
        assert_problem(reply.status, reply.headers, reply.body, {422})
