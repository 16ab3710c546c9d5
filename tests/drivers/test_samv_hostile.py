"""Hostile byte streams: byte-by-byte delivery, garbage, truncated frames, wrong checksums."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.base import DeviceEvent, DeviceState
from drivers.idcard import CorruptReply, IdCardSimulator, NoCard, SamvReader, SamvTimeout, sample_card
from drivers.idcard.frames import Command, Reply, Status, encode_reply
from drivers.idcard.identity import IdCard, check_digit
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


async def test_an_owed_reply_is_discarded_and_settle_waits_for_it() -> None:
    proto = SamvProtocol("idcard")
    proto.replies.owe(1, until=time.monotonic() + 5.0)
    settling = asyncio.create_task(proto.replies.settle())
    await asyncio.sleep(0.05)
    assert not settling.done(), "nothing may be sent while a reply is owed"
    proto.data_received(FIND_OK)  # the abandoned command's answer
    async with asyncio.timeout(1):
        await settling
    assert proto.replies.late == 1 and not proto.replies.owed
    waiter = proto.replies.expect()
    proto.data_received(SELECT_OK)
    assert (await waiter).sw3 == Status.OK


async def test_settle_gives_up_on_a_reply_that_never_comes() -> None:
    proto = SamvProtocol("idcard")
    proto.data_received(FIND_OK[:7])  # half a reply, then silence
    proto.replies.owe(1, until=time.monotonic() + 0.1)
    started = time.monotonic()
    await proto.replies.settle()
    assert time.monotonic() - started >= 0.09
    assert proto.framer.pending == 0, "the partial frame is dropped before the next command"
    assert proto.replies.late == 0 and not proto.replies.owed


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


async def test_a_late_reply_never_answers_the_next_command(
    reader: SamvReader, idcard_sim: IdCardSimulator, events: list[DeviceEvent]
) -> None:
    # SAM_V replies name no command: the reply to a command that timed out, arriving late,
    # would otherwise be taken as the answer to whatever is sent next (here a find, which would
    # read the SAM id's OK as "card found" with no card in the field).
    idcard_sim.delay_next_reply(0.4, command=Command.SAM_ID)
    with pytest.raises(SamvTimeout):
        await reader.sam_id(timeout=0.15)
    with pytest.raises(NoCard):
        await reader.find_card(timeout=1.0)
    assert await reader.sam_id(timeout=1.0) == "05.01-20230101-0000012345-0987654321"
    assert "card_present" not in [e.kind for e in events]
    assert reader.status.state is DeviceState.ONLINE


async def test_a_cancelled_read_does_not_hand_its_card_to_the_next_reader(
    reader: SamvReader, idcard_sim: IdCardSimulator
) -> None:
    first = sample_card()
    idcard_sim.insert_card(first)
    idcard_sim.delay_next_reply(0.5, command=Command.READ_TEXT_PHOTO)
    abandoned = asyncio.create_task(reader.read_card(timeout=5))
    while not idcard_sim.requests or idcard_sim.requests[-1].command is not Command.READ_TEXT_PHOTO:
        await asyncio.sleep(0.01)
    abandoned.cancel()  # the kiosk client went away mid-read
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    second = other_card()
    idcard_sim.insert_card(second)
    card = await reader.read_card(timeout=5)
    assert card.document_number == second.id_number
    assert card.document_number != first.id_number


def other_card() -> IdCard:
    """A second, different person (valid check character) for tests that must not mix them up."""
    card, first17 = sample_card(), "11010119000101002"
    return IdCard(
        "另一用户",
        card.gender,
        card.nation,
        card.birth_date,
        card.address,
        first17 + check_digit(first17),
        card.issuer,
        card.valid_from,
        card.valid_to,
        card.photo,
    )
