"""The error table: each domain error answers with its problem, found by the nearest class in its MRO."""

from __future__ import annotations

import importlib
import itertools
import json
import pkgutil
from typing import ClassVar

import pytest

import drivers
import gateway
from drivers.base import DeviceRejected, DeviceState, DriverError
from drivers.camera.errors import CameraNotFound
from drivers.cardreader.errors import SecurityStatusNotSatisfied
from gateway.api.errors import ANSWERS, Answer, answer_for, register, to_problem
from gateway.api.problems import Problem
from gateway.auth.errors import AuthError, FactorFailed, Throttled
from gateway.queueing import QueueFull
from gateway.sessions import SessionsFull, Unauthenticated
from gateway.uplink.outbox import OutboxFull, StorageError


def _wire(problem: Problem | None) -> tuple[int, dict[str, str], str]:
    assert problem is not None
    response = problem.response("/v1/x")
    assert isinstance(response.body, bytes)
    return response.status, dict(problem.headers), response.body.decode()


def _wire_form(kind: str, title: str, status: int, detail: str, **extensions: object) -> str:
    """The body as it goes on the wire, written out by hand: the fixed members first, in order."""
    fields = {"type": "https://edge-gateway.dev/problems/" + kind, "title": title, "status": status}
    return json.dumps({**fields, "detail": detail, "instance": "/v1/x", **extensions}, ensure_ascii=False)


def test_fixed_answers_keep_their_exact_bodies_and_headers() -> None:
    queue = QueueFull("printer queue is full", device="printer", retry_after=2.345, depth=8)
    queue_body = _wire_form(
        "queue-full",
        "Device queue is full",
        429,
        "printer queue is full",
        device="printer",
        retry_after_s=2.35,
    )
    assert _wire(to_problem(queue)) == (429, {"Retry-After": "3"}, queue_body)
    bearer = {"WWW-Authenticate": 'Bearer realm="edge-gateway"'}
    no_token = _wire_form("unauthenticated", "Authentication required", 401, "no bearer token")
    assert _wire(to_problem(Unauthenticated("no bearer token"))) == (401, bearer, no_token)
    full = OutboxFull("audit", reason="disk", used=1, limit=2)
    detail = (
        "outbox refused a audit message: the disk is full: the message was not accepted; nothing was queued"
    )
    full_body = _wire_form("outbox-full", "Cannot store the message", 507, detail, stream="audit")
    assert _wire(to_problem(full)) == (507, {}, full_body)
    sessions = to_problem(SessionsFull(4, 0.2))
    assert (
        sessions is not None
        and sessions.headers == {"Retry-After": "1"}
        and sessions.extensions == {"limit": 4}
    )


def test_subclasses_take_the_answer_of_their_nearest_registered_ancestor() -> None:
    # A card-reader status word is both a CardReaderError and a DeviceRejected: it answers as the latter.
    apdu = to_problem(SecurityStatusNotSatisfied(0x6982, device="pcsc", command="read"))
    assert apdu is not None
    assert (apdu.status, apdu.kind, apdu.title) == (502, "device-error", "The device reported an error")
    assert apdu.extensions == {"device": "pcsc", "code": "6982"}
    camera = to_problem(CameraNotFound("no camera", device="cam", state=DeviceState.NO_DEVICE))
    assert camera is not None
    assert (camera.status, camera.kind) == (503, "device-unavailable")
    assert camera.extensions == {"device": "cam", "state": "no_device"}
    storage = to_problem(StorageError("disk I/O error"))
    assert storage is not None and (storage.status, storage.kind) == (503, "storage-unavailable")


def test_auth_errors_answer_with_the_status_and_code_they_carry() -> None:
    class BadBadge(AuthError):
        status: ClassVar[int] = 403
        code: ClassVar[str] = "bad_badge"

    badge = to_problem(BadBadge("badge revoked", factor="badge"))
    assert badge is not None
    assert (badge.status, badge.kind, badge.title, badge.headers) == (403, "bad-badge", "Not allowed", {})
    assert badge.extensions == {"code": "bad_badge", "reason": "badge revoked", "factor": "badge"}
    failed = FactorFailed("wrong pin", factor="pin")
    failed.retry_after_s = 30
    answered = to_problem(failed)
    assert answered is not None
    assert (answered.status, answered.title, answered.headers) == (
        401,
        "Factor not proven",
        {"Retry-After": "30"},
    )
    assert answered.extensions["retry_after_s"] == 30
    throttled = to_problem(Throttled(12, factor="pin"))
    assert throttled is not None and (throttled.status, throttled.headers) == (429, {"Retry-After": "12"})


def test_problems_pass_through_and_unknown_errors_are_left_for_a_500() -> None:
    problem = Problem(418, "teapot", "I am a teapot")
    assert to_problem(problem) is problem
    assert to_problem(RuntimeError("boom")) is None
    assert to_problem(KeyError("x")) is None
    assert answer_for(ValueError("x")) is None


def test_a_registered_subclass_wins_over_its_base(monkeypatch: pytest.MonkeyPatch) -> None:
    class PaperJam(DeviceRejected):
        pass

    monkeypatch.setitem(ANSWERS, PaperJam, Answer(409, "paper-jam", "Paper jammed"))
    jam = to_problem(PaperJam("jammed", device="printer", code=3))
    assert jam is not None and (jam.status, jam.kind, jam.extensions) == (409, "paper-jam", {})
    monkeypatch.delitem(ANSWERS, PaperJam)
    register(PaperJam, Answer(410, "gone", "Gone"))
    assert answer_for(PaperJam("x")) == Answer(410, "gone", "Gone")
    del ANSWERS[PaperJam]
    rejected = to_problem(PaperJam("jammed", device="printer", code=3))
    assert rejected is not None and rejected.kind == "device-error"


def _all_error_classes() -> set[type[BaseException]]:
    for package in (gateway, drivers):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    found: set[type[BaseException]] = set()
    todo: list[type[BaseException]] = [BaseException]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_no_error_class_has_two_unrelated_registered_ancestors() -> None:
    """The MRO walk never has to choose between two branches: what an error answers is unambiguous."""
    classes = _all_error_classes()
    assert DriverError in classes and FactorFailed in classes
    for cls in classes:
        registered = [base for base in cls.__mro__ if base in ANSWERS]
        for nearer, farther in itertools.pairwise(registered):
            assert issubclass(nearer, farther), f"{cls.__qualname__}: {nearer.__name__} vs {farther.__name__}"
