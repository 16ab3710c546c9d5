"""Device queues: fairness between sessions, bounds, deadlines, cancellation, the priority lane."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.queueing import DeadlineExpired, DeviceQueue, Position, QueueFull, RequestCancelled


@pytest.fixture
async def queue() -> AsyncIterator[DeviceQueue]:
    q = DeviceQueue("printer", depth=64, deadline_s=30)
    q.start()
    yield q
    await q.close()


class Gate:
    """An operation that holds the device until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def hold(self) -> None:
        await self.opened.wait()

    def open(self) -> None:
        self.opened.set()


def recorder(log: list[str], name: str, seconds: float = 0.005):  # type: ignore[no-untyped-def]
    async def op() -> str:
        log.append(name)
        await asyncio.sleep(seconds)
        return name

    return op


async def test_newcomers_wait_behind_at_most_one_heavy_job(queue: DeviceQueue) -> None:
    served: list[str] = []
    heavy = [asyncio.create_task(queue.submit(recorder(served, f"H{i}"), session="heavy")) for i in range(20)]
    await asyncio.sleep(0)  # H0 starts
    light = [asyncio.create_task(queue.submit(recorder(served, f"S{i}"), session=f"s{i}")) for i in range(20)]
    await asyncio.gather(*heavy, *light)
    for i in range(20):
        before = served[: served.index(f"S{i}")]
        heavy_before = [name for name in before if name.startswith("H")]
        assert len(heavy_before) <= 1, f"S{i} waited behind {heavy_before}"
    assert [n for n in served if n.startswith("H")] == [f"H{i}" for i in range(20)], "FIFO per session"


async def test_round_robin_between_busy_sessions(queue: DeviceQueue) -> None:
    served: list[str] = []
    blocker = Gate()

    first = asyncio.create_task(queue.submit(blocker.hold, session="x"))
    await asyncio.sleep(0.01)
    tasks = [
        asyncio.create_task(queue.submit(recorder(served, f"{s}{i}"), session=s))
        for s in ("a", "b")
        for i in range(3)
    ]
    await asyncio.sleep(0)
    blocker.open()
    await asyncio.gather(first, *tasks)
    assert served == ["a0", "b0", "a1", "b1", "a2", "b2"]


async def test_full_queue_answers_with_retry_after() -> None:
    q = DeviceQueue("printer", depth=2, deadline_s=30)
    q.start()
    try:
        gate = Gate()

        running = asyncio.create_task(q.submit(gate.hold, session="a"))
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(q.submit(gate.hold, session=f"s{i}")) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as info:
            await q.submit(gate.hold, session="late")
        assert info.value.retry_after >= 1
        assert q.snapshot().rejected_full == 1
        gate.open()
        await asyncio.gather(running, *queued)
    finally:
        await q.close()


async def test_expired_request_never_reaches_the_device(queue: DeviceQueue) -> None:
    reached: list[str] = []
    gate = Gate()

    first = asyncio.create_task(queue.submit(gate.hold, session="a"))
    await asyncio.sleep(0.01)
    doomed = asyncio.create_task(queue.submit(recorder(reached, "late"), session="b", deadline_s=0.05))
    await asyncio.sleep(0.15)
    gate.open()
    await first
    with pytest.raises(DeadlineExpired):
        await doomed
    assert reached == []
    assert queue.snapshot().expired == 1


async def test_operation_overrunning_its_deadline_is_cut(queue: DeviceQueue) -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    with pytest.raises(DeadlineExpired):
        await queue.submit(hang, session="a", deadline_s=0.1)
    served: list[str] = []
    assert await queue.submit(recorder(served, "next"), session="b") == "next", "queue keeps serving"


async def test_client_going_away_withdraws_its_request(queue: DeviceQueue) -> None:
    reached: list[str] = []
    gate = Gate()

    first = asyncio.create_task(queue.submit(gate.hold, session="a"))
    await asyncio.sleep(0.01)
    leaving = asyncio.create_task(queue.submit(recorder(reached, "gone"), session="b"))
    await asyncio.sleep(0.01)
    assert queue.queued == 1
    leaving.cancel()
    await asyncio.sleep(0)
    assert queue.queued == 0
    gate.open()
    await first
    assert reached == []


async def test_session_end_cancels_queued_and_in_flight(queue: DeviceQueue) -> None:
    started = asyncio.Event()

    async def long_op() -> None:
        started.set()
        await asyncio.sleep(30)

    in_flight = asyncio.create_task(queue.submit(long_op, session="gone"))
    await started.wait()
    queued = asyncio.create_task(queue.submit(long_op, session="gone"))
    other: list[str] = []
    survivor = asyncio.create_task(queue.submit(recorder(other, "kept"), session="stay"))
    await asyncio.sleep(0)
    assert queue.cancel_session("gone") == 2
    for task in (in_flight, queued):
        with pytest.raises(RequestCancelled):
            await task
    assert await survivor == "kept"


async def test_priority_lane_jumps_the_queue(queue: DeviceQueue) -> None:
    served: list[str] = []
    gate = Gate()

    first = asyncio.create_task(queue.submit(gate.hold, session="a"))
    await asyncio.sleep(0.01)
    normal = [asyncio.create_task(queue.submit(recorder(served, f"n{i}"), session=f"s{i}")) for i in range(3)]
    probe = asyncio.create_task(queue.submit(recorder(served, "probe"), priority=True))
    await asyncio.sleep(0)
    gate.open()
    await asyncio.gather(first, probe, *normal)
    assert served[0] == "probe"


async def test_positions_are_reported_and_estimates_follow_service_time(queue: DeviceQueue) -> None:
    positions: list[Position] = []
    gate = Gate()

    first = asyncio.create_task(queue.submit(gate.hold, session="a"))
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(queue.submit(recorder([], f"o{i}"), session=f"o{i}")) for i in range(3)]
    mine = asyncio.create_task(queue.submit(recorder([], "me"), session="me", on_position=positions.append))
    await asyncio.sleep(0)
    assert positions[0].ahead == 3
    assert positions[0].estimated_wait_s > 0
    gate.open()
    await asyncio.gather(first, mine, *others)
    assert [p.ahead for p in positions][-1] == 0
    assert [p.ahead for p in positions] == sorted([p.ahead for p in positions], reverse=True)
