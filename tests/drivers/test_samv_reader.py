"""SamvReader against the simulator over a real pseudo-terminal."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import Device, DeviceEvent, DeviceState
from drivers.idcard import (
    BadRead,
    CardNotPresented,
    CheckDigitError,
    IdCardSimulator,
    NoCard,
    SamFault,
    SamvReader,
    UnsupportedCard,
    sample_card,
)
from drivers.idcard.frames import Command, Status
from drivers.idcard.identity import IdCard


def forged(card: IdCard) -> IdCard:
    """The same card with its check character changed: what a bad read looks like."""
    number = card.id_number
    wrong = "0" if number[-1] != "0" else "1"
    return IdCard(
        card.name,
        card.gender,
        card.nation,
        card.birth_date,
        card.address,
        number[:-1] + wrong,
        card.issuer,
        card.valid_from,
        card.valid_to,
        card.photo,
    )


async def test_reader_is_a_device_and_comes_online_with_status(
    reader: SamvReader, idcard_sim: IdCardSimulator
) -> None:
    assert isinstance(reader, Device)
    assert reader.driver == "samv"
    assert reader.status.state is DeviceState.ONLINE
    assert idcard_sim.requests[0].command is Command.STATUS
    assert (await reader.probe()).state is DeviceState.ONLINE
    assert await reader.sam_id() == "05.01-20230101-0000012345-0987654321"


async def test_read_card_waits_for_the_card(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    task = asyncio.create_task(reader.read_card(timeout=5))
    await asyncio.sleep(0.2)
    assert not task.done()
    idcard_sim.insert_card()
    card = await task
    assert card == sample_card()
    assert card.fingerprint is None
    assert reader.status.state is DeviceState.ONLINE


async def test_a_reader_whose_select_carries_no_data_still_reads(
    reader: SamvReader, idcard_sim: IdCardSimulator
) -> None:
    idcard_sim.select_data = b""
    idcard_sim.insert_card()
    assert await reader.read_card(timeout=5) == sample_card()


async def test_read_with_fingerprint(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card()
    card = await reader.read_card(timeout=5, fingerprint=True)
    assert card.fingerprint == idcard_sim.fingerprint
    assert idcard_sim.requests[-1].command is Command.READ_WITH_FINGERPRINT


async def test_no_card_within_timeout(reader: SamvReader) -> None:
    with pytest.raises(CardNotPresented) as info:
        await reader.read_card(timeout=0.3)
    assert isinstance(info.value, NoCard) and isinstance(info.value, TimeoutError)
    with pytest.raises(NoCard):
        await reader.find_card()


async def test_card_must_leave_before_the_next_read(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card()
    await reader.read_card(timeout=5)
    with pytest.raises(CardNotPresented):
        await reader.read_card(timeout=0.3)
    idcard_sim.remove_card()
    idcard_sim.insert_card()
    assert (await reader.read_card(timeout=5)).document_number == sample_card().id_number


async def test_bad_check_digit_is_a_bad_read(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card(forged(sample_card()))
    with pytest.raises(CheckDigitError) as info:
        await reader.read_card(timeout=5)
    assert isinstance(info.value, BadRead)
    assert sample_card().id_number[:-1] not in str(info.value)


async def test_read_failure_status_is_a_bad_read(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card()
    idcard_sim.inject_status(Status.READ_FAILED, command=Command.READ_TEXT_PHOTO)
    with pytest.raises(BadRead) as info:
        await reader.read_card(timeout=5)
    assert info.value.status == Status.READ_FAILED
    assert reader.status.state is DeviceState.ONLINE


async def test_unknown_card_type_needs_the_user(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card()
    idcard_sim.inject_status(Status.UNKNOWN_CARD_TYPE, command=Command.FIND_CARD)
    with pytest.raises(UnsupportedCard):
        await reader.find_card()


async def test_sam_fault_sets_hardware_error_and_recovers(
    reader: SamvReader, idcard_sim: IdCardSimulator
) -> None:
    idcard_sim.sam_status = Status.SAM_SELFTEST_FAILED
    with pytest.raises(SamFault):
        await reader.sam_status()
    assert reader.status.state is DeviceState.HARDWARE_ERROR
    with pytest.raises(Exception, match="SAM fault") as info:
        await reader.read_card(timeout=1)
    assert getattr(info.value, "state", None) is DeviceState.HARDWARE_ERROR
    idcard_sim.sam_status = Status.OK
    await reader.wait_online(timeout=5)  # the presence loop re-checks the SAM by itself


async def test_new_address_absent_and_present(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card()
    await reader.find_card()
    await reader.select_card()
    assert await reader.read_new_address() is None
    idcard_sim.new_address = "上海市示例区新址路2号"
    assert await reader.read_new_address() == "上海市示例区新址路2号"


async def test_presence_events_carry_no_personal_data(
    reader: SamvReader, idcard_sim: IdCardSimulator, events: list[DeviceEvent]
) -> None:
    idcard_sim.insert_card()
    await _wait_for(events, "card_present")
    idcard_sim.remove_card()
    await _wait_for(events, "card_removed")
    idcard_sim.insert_card()
    await reader.read_card(timeout=5)
    await _wait_for(events, "card_read")
    card = sample_card()
    for event in events:
        assert event.device == "idcard"
        assert card.id_number not in repr(event) and card.name not in repr(event)


async def test_auto_present_mode_reads_without_anyone() -> None:
    sim = IdCardSimulator(pace=False, auto_present=True, auto_present_delay=0.1)
    path = await sim.start()
    reader = SamvReader("idcard", path, poll_interval=0.05)
    try:
        await reader.start()
        await reader.wait_online(timeout=5)
        first = await reader.read_card(timeout=5)
        second = await reader.read_card(timeout=5)
        assert first == second == sample_card()
    finally:
        await reader.close()
        await sim.stop()


async def _wait_for(events: list[DeviceEvent], kind: str) -> None:
    async with asyncio.timeout(5):
        while not any(e.kind == kind for e in events):
            await asyncio.sleep(0.02)
