"""SamvReader reading other holders' cards through the simulator over a real pseudo-terminal.

The cards are presented as the raw text blocks built in test_idcard_types.py from the published
layouts (sources there), so the driver reads the bytes a real reader sends, not our encoder's.
"""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import DeviceEvent, DeviceState
from drivers.idcard import (
    BadRead,
    CardNotPresented,
    CheckDigitError,
    ForeignPermanentCard,
    ForeignPermanentCard2023,
    HmtResidencePermit,
    IdCardSimulator,
    RawCard,
    SamvReader,
    UnsupportedCard,
    sample_foreigner2023_card,
    sample_foreigner_card,
    sample_hmt_permit,
)
from tests.drivers.test_idcard_types import i_block, j_block, y_block

PHOTO = bytes(range(256)) * 4


async def test_foreigner_card_reads_where_it_used_to_be_unreadable(
    reader: SamvReader, idcard_sim: IdCardSimulator, events: list[DeviceEvent]
) -> None:
    idcard_sim.insert_card(RawCard(i_block(), PHOTO))
    card = await reader.read_card(timeout=5)
    assert isinstance(card, ForeignPermanentCard)
    assert card.document_number == "PAK310080010103"
    assert card.english_name.startswith("ZHENGJIAN,YANGBEN")
    assert card.photo == PHOTO
    assert reader.status.state is DeviceState.ONLINE
    await _wait_for(events, "card_read")
    read = next(e for e in events if e.kind == "card_read")
    assert read.data["card_type"] == "foreign_permanent"
    assert "PAK310080010103" not in repr(events) and "ZHENGJIAN" not in repr(events)


async def test_hmt_permit_reads_with_fingerprint(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card(RawCard(j_block(), PHOTO))
    card = await reader.read_card(timeout=5, fingerprint=True)
    assert isinstance(card, HmtResidencePermit)
    assert card.document_number == "810000199408230021"
    assert card.travel_permit_number == "H12345678"
    assert card.fingerprint == idcard_sim.fingerprint


async def test_bad_check_digit_on_either_card_is_a_bad_read(
    reader: SamvReader, idcard_sim: IdCardSimulator
) -> None:
    for block in (i_block(number="PAK310080010104"), j_block(number="810000199408230022")):
        idcard_sim.remove_card()
        idcard_sim.insert_card(RawCard(block, PHOTO))
        with pytest.raises(CheckDigitError) as info:
            await reader.read_card(timeout=5)
        assert isinstance(info.value, BadRead)
        assert "PAK31008001010" not in str(info.value) and "81000019940823002" not in str(info.value)


async def test_garbled_fields_are_a_bad_read_not_a_record(
    reader: SamvReader, idcard_sim: IdCardSimulator
) -> None:
    idcard_sim.insert_card(RawCard(i_block(nationality="P1K"), PHOTO))
    with pytest.raises(BadRead, match="unreadable"):
        await reader.read_card(timeout=5)


async def test_2023_foreigner_card_reads(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card(RawCard(y_block(), PHOTO))
    card = await reader.read_card(timeout=5)
    assert isinstance(card, ForeignPermanentCard2023)
    assert card.document_number == "931586198001010028"
    assert card.photo == PHOTO


async def test_unknown_type_is_its_own_clear_error(reader: SamvReader, idcard_sim: IdCardSimulator) -> None:
    idcard_sim.insert_card(RawCard(y_block(type="Z"), PHOTO))
    with pytest.raises(UnsupportedCard) as info:
        await reader.read_card(timeout=5)
    err = info.value
    assert err.code == "unsupported_card_type"
    assert err.card_type == "Z"
    assert "type Z" in str(err)
    assert "931586198001010028" not in str(err) and "ZHENGJIAN" not in str(err)
    assert type(err) is UnsupportedCard, "its own error, not a bad read"
    assert reader.status.state is DeviceState.ONLINE, "a card of another type is not a device fault"
    # The reader read the card: as after any read, it must leave the field before the next one.
    with pytest.raises(CardNotPresented):
        await reader.read_card(timeout=0.3)
    idcard_sim.remove_card()
    idcard_sim.insert_card(RawCard(i_block(), PHOTO))
    assert isinstance(await reader.read_card(timeout=5), ForeignPermanentCard)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("foreign_permanent", sample_foreigner_card()),
        ("hmt_residence", sample_hmt_permit()),
        ("foreign_permanent_2023", sample_foreigner2023_card()),
    ],
)
async def test_auto_presenting_simulator_shows_the_configured_card(kind: str, expected: object) -> None:
    sim = IdCardSimulator(pace=False, auto_present=True, auto_present_delay=0.05, card=kind)
    path = await sim.start()
    reader = SamvReader("idcard", path, poll_interval=0.05)
    try:
        await reader.start()
        await reader.wait_online(timeout=5)
        assert await reader.read_card(timeout=5) == expected
    finally:
        await reader.close()
        await sim.stop()


async def test_simulated_unknown_type_is_unsupported() -> None:
    sim = IdCardSimulator(pace=False, card="unknown_type")
    path = await sim.start()
    reader = SamvReader("idcard", path, poll_interval=0.05)
    try:
        await reader.start()
        await reader.wait_online(timeout=5)
        sim.insert_card()
        with pytest.raises(UnsupportedCard) as info:
            await reader.read_card(timeout=5)
        assert info.value.card_type == "Z"
    finally:
        await reader.close()
        await sim.stop()


def test_simulator_refuses_an_unknown_card_setting() -> None:
    with pytest.raises(ValueError, match="unknown simulated card"):
        IdCardSimulator(card="passport")


async def _wait_for(events: list[DeviceEvent], kind: str) -> None:
    async with asyncio.timeout(5):
        while not any(e.kind == kind for e in events):
            await asyncio.sleep(0.02)
