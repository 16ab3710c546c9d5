"""The serial exchange helper: gate with a bound, settle, send, await, and owe when given up.

The drivers' own tests (test_samv_hostile, test_escpos_printer) run it over real pseudo-terminals;
here each step is driven by hand, replies delivered as a link protocol delivers them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.base import DeviceState, DeviceUnavailable
from drivers.serialio import CommandGate
from drivers.serialio.exchange import UnnamedReplies, ask, turn


class Busy(Exception):
    pass


class NoReply(Exception):
    pass


def deliver(replies: UnnamedReplies[int], value: int) -> str:
    """What a link protocol does with one reply: drop it if owed, else hand it to a waiter."""
    if replies.take_late():
        return "late"
    return "answer" if replies.resolve(value) else "unsolicited"


def held(gate: CommandGate) -> bool:
    return gate.busy


async def test_turn_admits_one_and_the_next_is_busy_after_its_bound() -> None:
    gate = CommandGate()
    entered: list[str] = []
    async with turn(gate, within=1.0, busy=Busy) as waited:
        assert waited < 0.5 and held(gate)
        with pytest.raises(Busy):
            async with turn(gate, within=0.05, busy=Busy):
                entered.append("second")
    assert not entered, "the gate was held"
    assert not held(gate), "released after the body, and after the busy one gave up"
    async with turn(gate, within=0.05, busy=Busy):
        assert held(gate)


async def test_replies_come_back_in_order_and_nothing_is_owed() -> None:
    replies: UnnamedReplies[int] = UnnamedReplies()
    sent: list[str] = []

    def send() -> None:
        sent.append("q")
        asyncio.get_running_loop().call_soon(lambda: [deliver(replies, v) for v in (7, 8, 9)])

    values = await ask(replies, send, count=3, window=1.0, no_reply=NoReply, owed_until=lambda t: t + 5)
    assert values == [7, 8, 9] and sent == ["q"]
    assert not replies.owed and len(replies) == 0


async def test_a_timed_out_exchange_owes_its_missing_replies_and_the_next_waits_for_them() -> None:
    settled: list[bool] = []
    replies: UnnamedReplies[int] = UnnamedReplies(after_settle=lambda: settled.append(True))

    def send_one_of_three() -> None:
        asyncio.get_running_loop().call_soon(deliver, replies, 1)

    windows: list[float] = []

    def owed_until(sent_at: float) -> float:
        windows.append(sent_at)
        return time.monotonic() + 5.0

    with pytest.raises(NoReply):
        await ask(replies, send_one_of_three, count=3, window=0.1, no_reply=NoReply, owed_until=owed_until)
    assert len(windows) == 1 and windows[0] <= time.monotonic()
    assert replies.owed and len(replies) == 0

    sent: list[str] = []
    nxt = asyncio.create_task(
        ask(replies, lambda: sent.append("q"), window=1.0, no_reply=NoReply, owed_until=lambda t: t)
    )
    await asyncio.sleep(0.05)
    assert not sent, "nothing is sent while replies are owed"
    assert deliver(replies, 2) == "late"
    assert deliver(replies, 3) == "late"
    while not sent:
        await asyncio.sleep(0.01)
    assert settled == [True]
    assert deliver(replies, 4) == "answer"
    assert await nxt == [4] and replies.late == 2


async def test_a_caller_that_goes_away_leaves_its_reply_owed() -> None:
    replies: UnnamedReplies[int] = UnnamedReplies()
    task = asyncio.create_task(
        ask(replies, lambda: None, window=5.0, no_reply=NoReply, owed_until=lambda t: t + 0.05)
    )
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert replies.owed
    await replies.settle()  # the window passes: the debt is written off
    assert not replies.owed and replies.late == 0
    assert deliver(replies, 1) == "unsolicited"


async def test_a_reply_that_does_not_fit_is_reported_and_the_next_one_taken() -> None:
    replies: UnnamedReplies[int] = UnnamedReplies()
    misfits: list[int] = []

    def send() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(deliver, replies, 99)
        loop.call_later(0.02, deliver, replies, 4)

    values = await ask(
        replies,
        send,
        window=1.0,
        no_reply=NoReply,
        owed_until=lambda t: t + 5,
        fits=lambda v: v < 10,
        misfit=misfits.append,
    )
    assert values == [4] and misfits == [99] and not replies.owed


async def test_a_reply_that_came_as_an_error_is_not_owed() -> None:
    replies: UnnamedReplies[int] = UnnamedReplies()
    gone = DeviceUnavailable("gone", state=DeviceState.NO_DEVICE)

    def send() -> None:
        asyncio.get_running_loop().call_soon(replies.fail_all, gone)

    with pytest.raises(DeviceUnavailable):
        await ask(replies, send, window=1.0, no_reply=NoReply, owed_until=lambda t: t + 5)
    assert not replies.owed


async def test_a_failed_send_leaves_the_reply_owed_until_its_window() -> None:
    replies: UnnamedReplies[int] = UnnamedReplies()

    def send() -> None:
        raise DeviceUnavailable("port not open", state=DeviceState.NO_DEVICE)

    with pytest.raises(DeviceUnavailable):
        await ask(replies, send, window=1.0, no_reply=NoReply, owed_until=lambda t: t + 0.05)
    assert replies.owed and len(replies) == 0
