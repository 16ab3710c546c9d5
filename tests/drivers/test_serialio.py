"""The shared serial layer: correlation, the command gate, bounded framing, opening ports."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from drivers.base import DeviceState, DeviceUnavailable
from drivers.idcard.protocol import SamvProtocol
from drivers.serialio import CommandGate, FifoReplies, KeyedReplies, OwedReplies, PreambleFramer, open_port


async def test_fifo_replies_go_to_the_oldest_waiter_and_fail_together() -> None:
    replies: FifoReplies[int] = FifoReplies()
    first, second = replies.expect(), replies.expect()
    assert replies.resolve(1)
    assert await first == 1
    replies.fail_all(DeviceUnavailable("gone", state=DeviceState.NO_DEVICE))
    with pytest.raises(DeviceUnavailable):
        await second
    assert not replies.resolve(2)  # nobody waits: an unsolicited reply is dropped


async def test_keyed_replies_match_by_key() -> None:
    replies: KeyedReplies[str, int] = KeyedReplies()
    a, b = replies.expect("a"), replies.expect("b")
    assert replies.resolve("b", 2) and not replies.resolve("zz", 0)
    assert await b == 2 and not a.done()
    with pytest.raises(RuntimeError):
        replies.expect("a")
    replies.forget("a")
    assert len(replies) == 0


async def test_gate_admits_one_and_shows_its_queue() -> None:
    gate = CommandGate()
    order: list[int] = []
    release = asyncio.Event()

    async def command(i: int) -> None:
        async with gate.hold():
            order.append(i)
            await release.wait()

    tasks = [asyncio.create_task(command(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert gate.busy and gate.depth == 2 and order == [0]
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and gate.depth == 0


def test_framer_rejects_oversized_lengths_and_stays_bounded() -> None:
    framer = PreambleFramer(b"\xaa\x55", header_len=3, frame_len=lambda h: 3 + h[2], max_frame=64)
    frames, _ = framer.feed(b"\xaa\x55\xff" + b"\x00" * 100 + b"\xaa\x55\x01z")
    assert frames == [b"\xaa\x55\x01z"]
    framer.feed(b"\xaa\x55\x3c" + b"x" * 10)
    assert framer.pending == 13
    framer.reset()
    assert framer.pending == 0


async def test_open_missing_path_is_no_device(tmp_path: object) -> None:
    with pytest.raises(DeviceUnavailable) as info:
        await open_port("x", f"{tmp_path}/ttyUSB9", lambda: SamvProtocol("x"), baudrate=9600)
    assert info.value.state is DeviceState.NO_DEVICE


async def test_open_refused_socket_is_no_device() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeviceUnavailable) as info:
        await open_port("x", f"socket://127.0.0.1:{port}", lambda: SamvProtocol("x"), baudrate=9600)
    assert info.value.state is DeviceState.NO_DEVICE


async def test_owed_replies_settle_when_every_owed_answer_came() -> None:
    owed = OwedReplies()
    assert not owed.take(), "nothing owed: an answer is somebody's"
    owed.owe(2, until=time.monotonic() + 5)
    settling = asyncio.create_task(owed.settle())
    assert owed.take()
    await asyncio.sleep(0.02)
    assert not settling.done(), "one of two owed answers is still out"
    assert owed.take()
    async with asyncio.timeout(1):
        await settling
    assert not owed and owed.discarded == 2
    assert not owed.take()


async def test_owed_replies_written_off_when_the_window_passes() -> None:
    owed = OwedReplies()
    owed.owe(4, until=time.monotonic() + 0.05)
    async with asyncio.timeout(1):
        await owed.settle()
    assert not owed and owed.discarded == 0
    assert not owed.take(), "an answer after the write-off goes to whoever waits"
