"""Schemathesis over the document: no 500, documented statuses, conforming bodies, headers and types."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_contract.conftest import Gateway, Sessions
from tests.support.daemon import REPO

Case = schemathesis.Case[Any]

OPENAPI = REPO / "gateway" / "openapi.json"
EVENTS = "/v1/sessions/{session_id}/events"  # never ends: tested in test_events.py
# Routes a technician session uses; every other session route gets the citizen session.
TECHNICIAN_PATHS = (
    "/v1/sessions/{session_id}/factors/staffcard",
    "/v1/sessions/{session_id}/factors/totp",
    "/v1/sessions/{session_id}/factors/pin",
    "/v1/sessions/{session_id}/maintenance/",
)
# Resetting an unknown device answers 500 (test_findings.py::test_reset_of_unknown_device_is_404
# holds it); until that is fixed the fuzzer resets a real device so the route's other answers are checked.
RESET = "/v1/sessions/{session_id}/maintenance/devices/{device}/reset"
DEVICES = ("idcard", "printer")

# Device down, deadline passed, outbox full: designed answers, documented per route (checked by
# status_code_conformance) and held to their problem schemas. A 500 is never expected.
DESIGNED_5XX = ["502", "503", "504", "507"]
DESIGNED_5XX_KINDS = frozenset(
    {
        "device-error",
        "device-unavailable",
        "device-not-configured",
        "deadline-expired",
        "device-timeout",
        "factor-unavailable",
        "verifier-error",
        "verifier-timeout",
        "sessions-full",
        "storage-unavailable",
        "outbox-full",
        "not-ready",
    }
)
MAX_EXAMPLES = 20

# The file, not the served copy: test_document.py proves they are the same bytes. (Schemathesis'
# fixture-based lazy loader cannot be used: on pytest 9 it fails writing Function._nodeid.)
schema = schemathesis.openapi.from_path(
    str(OPENAPI),
    config=schemathesis.Config.from_dict(
        {
            "request-timeout": 15,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            # examples, coverage (boundaries, missing fields, wrong types) and fuzzing; no stateful
            # phase: the document declares no links, and `aim` supplies live sessions instead.
            "phases": {"stateful": {"enabled": False}},
            "checks": {"not_a_server_error": {"expected-statuses": ["2XX", "4XX", *DESIGNED_5XX]}},
        }
    ),
).exclude(path=EVENTS)


@schemathesis.check
def designed_server_error(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Case
) -> bool | None:
    """A 5xx must be a problem of a designed kind, never a generic internal error."""
    if response.status_code < 500:
        return None
    kind = str(response.json().get("type", "")).rsplit("/", 1)[-1]
    assert kind in DESIGNED_5XX_KINDS, f"{response.status_code} of kind {kind!r}: {response.text[:300]}"
    return None


CHECKS = [
    not_a_server_error,
    designed_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def reached() -> Iterator[dict[str, collections.Counter[int]]]:
    """Statuses seen per operation; at the end, every session route must have got past 401/404."""
    seen: dict[str, collections.Counter[int]] = {}
    yield seen
    stuck = sorted(
        label for label, statuses in seen.items() if "{session_id}" in label and set(statuses) <= {401, 404}
    )
    assert not stuck, f"the fuzzer never got past authentication on {stuck}: {seen}"


def aim(case: Case, sessions: Sessions) -> None:
    """Point a session route at a live session with its token (and, half the time, a real job/device)."""
    params = dict(case.path_parameters or {})
    if "session_id" not in params:
        return
    path = case.operation.path
    live = sessions.technician() if path.startswith(TECHNICIAN_PATHS) else sessions.citizen()
    params["session_id"] = live.id
    if "job_id" in params and len(str(params["job_id"])) % 2 == 0:
        params["job_id"] = sessions.job(live)
    if "device" in params and (path == RESET or len(str(params["device"])) % 2 == 0):
        params["device"] = DEVICES[len(str(params["device"])) % len(DEVICES)]
    case.path_parameters = params
    case.headers["Authorization"] = f"Bearer {live.token}"


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_response_conforms(
    case: Case,
    gateway: Gateway,
    sessions: Sessions,
    reached: dict[str, collections.Counter[int]],
) -> None:
    aim(case, sessions)
    response = case.call_and_validate(base_url=gateway.base_url, checks=CHECKS)
    reached.setdefault(case.operation.label, collections.Counter())[response.status_code] += 1
