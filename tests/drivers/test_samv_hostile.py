"""Hostile byte streams: byte-by-byte delivery, garbage, truncated frames, wrong checksums."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.base import DeviceState
from drivers.idcard import CorruptReply, IdCardSimulator, SamvReader, SamvTimeout, sample_card
from drivers.idcard.frames import Reply, Status, encode_reply
from drivers.idcard.protocol import SamvProtocol

FIND_OK = encode_reply(Reply(0, 0, Status.FIND_OK, bytes(4)))
SELECT_OK = encode_reply(Reply(0, 0, Status.OK, bytes(8)))


async def test_byte_by_byte_delivery() -> None:
    proto = SamvProtocol("idcard")
    first = proto.replies.expect()
    second = proto.replies.expect()
    for byte in FIND_OK + SELECT_OK:
        proto.data_received(bytes([byte]))
    assert (await first).sw3 == Status.FIND_OK
    assert (await second).sw3 == Status.OK


async def test_garbage_between_frames_is_skipped() -> None:
    proto = SamvProtocol("idcard")
    first = proto.replies.expect()
    second = proto.replies.expect()
    proto.data_received(b"\x00\xaa\xaa\x55" + FIND_OK + b"\xaa\xaa\xaa\x96" + b"junk" + SELECT_OK)
    assert (await first).sw3 == Status.FIND_OK
    assert (await second).sw3 == Status.OK
    assert proto.framer.dropped_bytes > 0


async def test_wrong_checksum_fails_the_request_and_resyncs() -> None:
    proto = SamvProtocol("idcard")
    first = proto.replies.expect()
    proto.data_received(FIND_OK[:-1] + bytes([FIND_OK[-1] ^ 0xFF]))
    with pytest.raises(CorruptReply):
        await first
    proto.replies.forget(first)
    second = proto.replies.expect()
    proto.data_received(SELECT_OK)
    assert (await second).sw3 == Status.OK
    assert proto.corrupt == 1


async def test_data_received_never_raises_on_noise() -> None:
    proto = SamvProtocol("idcard")
    for chunk in (b"\xaa\xaa\xaa\x96\x69\xff\xff", bytes(range(256)), b"\xaa" * 5000):
        proto.data_received(chunk)
    assert proto.framer.pending < 4096


async def test_truncated_reply_times_out_then_the_reader_recovers(
    reader: SamvReader, idcard_sim: IdCardSimulator
) -> None:
    idcard_sim.insert_card()
    idcard_sim.stall_next_reply(after=9)
    started = time.monotonic()
    with pytest.raises(SamvTimeout):
        await reader.find_card(timeout=0.3)
    assert time.monotonic() - started < 2
    await reader.find_card()
    assert reader.status.state is DeviceState.ONLINE


async def test_stall_in_a_card_read_does_not_wedge(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card()
    await reader.find_card()
    await reader.select_card()
    idcard_sim.stall_next_reply(after=600)
    with pytest.raises(SamvTimeout):
        await reader.read_text_photo(timeout=0.3)
    idcard_sim.remove_card()
    idcard_sim.insert_card()
    assert await reader.read_card(timeout=5) == sample_card()


async def test_wrong_checksum_from_the_reader(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.corrupt_next_reply()
    with pytest.raises(CorruptReply):
        await reader.sam_status()
    await reader.sam_status()
    assert reader.status.state is DeviceState.ONLINE


async def test_garbage_before_every_reply(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.garbage_between_frames = True
    idcard_sim.insert_card()
    assert await reader.read_card(timeout=5) == sample_card()


async def test_paced_byte_stream_reads_a_card() -> None:
    sim = IdCardSimulator(pace=True)
    path = await sim.start()
    reader = SamvReader("idcard", path, poll_interval=0.05)
    try:
        await reader.start()
        await reader.wait_online(timeout=5)
        sim.insert_card()
        async with asyncio.timeout(5):
            assert await reader.read_card() == sample_card()
    finally:
        await reader.close()
        await sim.stop()
