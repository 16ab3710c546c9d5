"""Cards as real ones behave, through pcscd + vpcd: record addressing, T=0, contact bank cards.

The virtual cards answer READ RECORD by position and by identifier as ISO 7816-4 defines, 6A83
for a record that does not exist, 6Cxx for a wrong Le, and under a T=0 ATR they refuse a case 4
command carrying Le and deliver data with 61xx + GET RESPONSE (vcard.py). The byte facts and
their public sources are listed in drivers/cardreader/apdu.py, records.py and bankcard.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.cardreader import BankCardInfo, PcscCardReader, WrongCard
from drivers.cardreader import apdu as iso
from drivers.cardreader.driver import _PcscSession
from drivers.cardreader.errors import (
    CardRemoved,
    RecordNotFound,
    TransactionFailed,
    WrongLength,
)
from drivers.cardreader.records import EF05, EF06
from drivers.cardreader.vcard import (
    REORDERED_LAYOUT,
    SPEC_LAYOUT,
    BankApplet,
    BankData,
    CardFaults,
    SocialSecurityApplet,
    StaffApplet,
    VirtualCard,
)
from tests.support.pcsc import VPCD_READER, wait_card_state

MakeCard = Callable[..., VirtualCard]
PERSONAL = ("11010519491231002X", "测试持卡人", "TEST00001", "6200000000000000", "110100D156")


def headers(card: VirtualCard, ins: int) -> list[str]:
    return [c.hex().upper() for c in card.commands if c[1] == ins]


def assert_nothing_personal(logs: Sequence[Mapping[str, Any]]) -> None:
    text = repr(logs)
    for secret in PERSONAL:
        assert secret not in text


def bare_transmit(commands: list[str]) -> list[str]:
    """Raw pyscard on vpcd's reader, no driver: each command's full response as hex."""
    from smartcard import scard

    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hr == scard.SCARD_S_SUCCESS
    try:
        hr, handle, protocol = scard.SCardConnect(
            context, VPCD_READER, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        assert hr == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hr)
        out = []
        for command in commands:
            hr, response = scard.SCardTransmit(handle, protocol, list(bytes.fromhex(command)))
            assert hr == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hr)
            out.append(bytes(response).hex().upper())
        scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
        return out
    finally:
        scard.SCardReleaseContext(context)


# --- social security card: addressing ---


async def test_the_old_misreading_now_fails_clearly(make_card: MakeCard) -> None:
    """The former driver's bytes against a card that behaves like a real one."""
    card = make_card(SocialSecurityApplet())
    await card.insert()
    assert await asyncio.to_thread(wait_card_state, True, timeout=10)
    answers = await asyncio.to_thread(
        bare_transmit,
        [
            "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00",
            "00A4020002EF06",
            "00B2080400",  # the old "item 08": an eighth record by position
            "00B2010400",  # what public readers send: position 1
            "00B2080000",  # or by identifier
        ],
    )
    assert answers[1] == "9000"
    assert answers[2] == "6A83"
    assert answers[3] == answers[4] == "0812" + b"11010519491231002X".hex().upper() + "9000"


async def test_old_select_with_le_is_refused_by_a_t0_card(make_card: MakeCard) -> None:
    card = make_card(SocialSecurityApplet(protocol="T=0"))
    await card.insert()
    assert await asyncio.to_thread(wait_card_state, True, timeout=10)
    old, new = await asyncio.to_thread(
        bare_transmit,
        ["00A404000F7378312E73682EC9E7BBE1B1A3D5CF00", "00A404000F7378312E73682EC9E7BBE1B1A3D5CF"],
    )
    assert old == "6700"
    assert new.startswith("61")


async def test_t0_card_reads_with_get_response_and_le_correction(
    reader: PcscCardReader, make_card: MakeCard
) -> None:
    card = make_card(SocialSecurityApplet(protocol="T=0"))
    await card.insert()
    with capture_logs() as logs:
        result = await reader.read_social_security(timeout=10)
    assert result.id_number == "11010519491231002X"
    assert result.card_identifier == "110100D15600000512345678FFFFFFFF"
    select = card.apdus[0]
    assert select.hex().upper() == "00A404000F7378312E73682EC9E7BBE1B1A3D5CF"  # no Le under T=0
    assert card.answers[0][0] == 0x61 and card.commands[1].hex().upper() == "00C00000"
    # Under T=0 READ RECORD with Le 00 is answered 6Cxx and resent with the right Le.
    assert headers(card, 0xB2).count("00B20104") == 4  # EF05 and EF06 position 1, each twice
    assert all(a[0] != 0x67 for a in card.answers), "no malformed command reached the card"
    (event,) = [e for e in logs if e["event"] == "sscard_addressing"]
    assert (event["protocol"], event["ef05"], event["ef06"]) == ("T=0", "position", "position")
    assert_nothing_personal(logs)


async def test_card_with_another_record_order_is_read_by_identifier(
    reader: PcscCardReader, make_card: MakeCard
) -> None:
    card = make_card(SocialSecurityApplet(layout=REORDERED_LAYOUT))
    await card.insert()
    with capture_logs() as logs:
        result = await reader.read_social_security(timeout=10)
    assert (result.id_number, result.name) == ("11010519491231002X", "测试持卡人")
    # Position 1 of EF06 held item 0A: the tag check caught it, then identifier mode.
    assert headers(card, 0xB2)[-3:] == ["00B20104", "00B20800", "00B20900"]
    (event,) = [e for e in logs if e["event"] == "sscard_addressing"]
    assert (event["ef05"], event["ef06"]) == ("position", "identifier")
    assert_nothing_personal(logs)


async def test_card_without_position_addressing(reader: PcscCardReader, make_card: MakeCard) -> None:
    card = make_card(SocialSecurityApplet(addressing=frozenset({"identifier"})))
    await card.insert()
    result = await reader.read_social_security(timeout=10)
    assert result.card_number == "TEST00001"
    reads = headers(card, 0xB2)
    # One refused position read per file (6A86), the rest by identifier.
    ef05 = ["00B20104", "00B20100", "00B20300", "00B20500", "00B20600", "00B20700"]
    ef06 = ["00B20104", "00B20800", "00B20900"]
    assert reads == [*ef05, *ef06]


async def test_card_without_identifier_addressing_is_scanned(
    reader: PcscCardReader, make_card: MakeCard
) -> None:
    applet = SocialSecurityApplet(layout=REORDERED_LAYOUT, addressing=frozenset({"position"}))
    card = make_card(applet)
    await card.insert()
    result = await reader.read_social_security(timeout=10)
    assert (result.id_number, result.name) == ("11010519491231002X", "测试持卡人")
    assert "00B20800" in headers(card, 0xB2)  # identifier tried once, refused, then the scan


async def test_card_refusing_select_p1_02_gets_p1_00(reader: PcscCardReader, make_card: MakeCard) -> None:
    card = make_card(SocialSecurityApplet(select_p1=frozenset({0x00})))
    await card.insert()
    assert (await reader.read_social_security(timeout=10)).name == "测试持卡人"
    selects = [a.hex().upper() for a in card.apdus if a[1] == 0xA4 and a[2] != 0x04]
    assert selects == ["00A4020002EF05", "00A4000002EF05", "00A4020002EF06", "00A4000002EF06"]


async def test_card_missing_an_item_fails_naming_the_record(
    reader: PcscCardReader, make_card: MakeCard
) -> None:
    layout = {EF05: SPEC_LAYOUT[EF05], EF06: (0x08, 0x0A, 0x0B)}
    await make_card(SocialSecurityApplet(layout=layout)).insert()
    with pytest.raises(RecordNotFound) as info:
        await reader.read_social_security(timeout=10)
    assert info.value.code == "6A83"
    assert "00 B2 09 00" in str(info.value)


# --- bank cards ---


async def test_bank_card_in_a_contact_slot_is_found_through_the_pse(
    reader: PcscCardReader, make_card: MakeCard
) -> None:
    card = make_card(BankApplet(interface="contact", protocol="T=0"))
    await card.insert()
    with capture_logs() as logs:
        info = await reader.read_bank_card(timeout=10)
    assert info == BankCardInfo(aid="A000000333010101", label="UnionPay Debit", source="pse")
    selects = [a.hex().upper() for a in card.apdus if a[1] == 0xA4]
    assert selects == [
        "00A404000E325041592E5359532E4444463031",  # PPSE, no Le (T=0): 6A82 on the contact side
        "00A404000E315041592E5359532E4444463031",  # PSE
    ]
    # Directory records of short EF 1 until 6A83; never a record of the payment application.
    assert [r for r in headers(card, 0xB2)] == ["00B2010C", "00B2010C", "00B2020C"]
    (found,) = [e for e in logs if e["event"] == "bank_application_found"]
    assert (found["source"], found["aid"]) == ("pse", "A000000333010101")
    assert_nothing_personal(logs)


async def test_contact_card_without_pse_is_found_by_unionpay_aid(
    reader: PcscCardReader, make_card: MakeCard
) -> None:
    data = BankData(aid=bytes.fromhex("A000000333010102"), label="UnionPay Credit")
    card = make_card(BankApplet(data, interface="contact", pse=False))
    await card.insert()
    info = await reader.read_bank_card(timeout=10)
    assert info == BankCardInfo(aid="A000000333010102", label="UnionPay Credit", source="aid")
    selected = [a[5 : 5 + a[4]].hex().upper() for a in card.apdus if a[1] == 0xA4]
    assert selected[2:] == ["A000000333010101", "A000000333010102"]
    assert 0xB2 not in {c[1] for c in card.commands}


async def test_a_card_without_any_payment_application_is_wrong_card(
    reader: PcscCardReader, make_card: MakeCard
) -> None:
    await make_card(StaffApplet()).insert()
    with pytest.raises(WrongCard) as info:
        await reader.read_bank_card(timeout=10)
    assert info.value.expected == "bank"
    assert "PSE" in str(info.value)


# --- "transaction failed" is not "card removed" ---


class ReaderRefusingLe:
    """pyscard, except that SCardTransmit fails ("transaction failed") for a case 4 command with Le.

    A reader doing that keeps the card powered; vpcd cannot produce it (its only transmit failure
    is a card that went away), so this one reader fault is injected at pyscard's boundary while
    pcscd, vpcd and the card stay real.
    """

    def __init__(self, always: bool = False) -> None:
        from smartcard import scard

        self._scard = scard
        self.always = always
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scard, name)

    def SCardTransmit(self, handle: int, protocol: int, command: list[int]) -> tuple[int, list[int]]:
        raw = bytes(command)
        if self.always or (len(raw) > 5 and iso.case_of(raw) == 4):
            self.refused += 1
            return self._scard.SCARD_E_NOT_TRANSACTED, []
        result: tuple[int, list[int]] = self._scard.SCardTransmit(handle, protocol, command)
        return result


@pytest.fixture
def session_factory() -> Iterator[Callable[[Any], _PcscSession]]:
    sessions: list[_PcscSession] = []

    def make(scard: Any) -> _PcscSession:
        session = _PcscSession(scard, "cardreader")
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.release()


async def test_transaction_failed_with_the_card_present_is_not_a_removal(
    make_card: MakeCard, session_factory: Callable[[Any], _PcscSession]
) -> None:
    card = make_card(SocialSecurityApplet())
    await card.insert()
    assert await asyncio.to_thread(wait_card_state, True, timeout=10)
    quirky = ReaderRefusingLe()
    session = session_factory(quirky)
    await asyncio.to_thread(session.connect, VPCD_READER)
    assert session.protocol_name == "T=1"
    # The SELECT with Le fails at the reader; the driver sends it again without Le.
    fci = await asyncio.to_thread(session.command, iso.select_aid(iso.SSC_AID))
    assert fci.startswith(b"\x6f")
    assert quirky.refused == 1
    assert card.apdus[-2].hex().upper() == "00A404000F7378312E73682EC9E7BBE1B1A3D5CF"
    # A reader failing everything: a clear reader error, the card still counted as present.
    quirky.always = True
    with pytest.raises(TransactionFailed) as info:
        await asyncio.to_thread(session.command, iso.read_record(1))
    assert "still in the reader" in str(info.value)
    assert not isinstance(info.value, CardRemoved)


async def test_transaction_failed_after_a_real_removal_is_a_removal(
    make_card: MakeCard, session_factory: Callable[[Any], _PcscSession]
) -> None:
    card = make_card(SocialSecurityApplet(), CardFaults(remove_after_apdus=1))
    await card.insert()
    assert await asyncio.to_thread(wait_card_state, True, timeout=10)
    from smartcard import scard

    session = session_factory(scard)
    await asyncio.to_thread(session.connect, VPCD_READER)
    with pytest.raises(CardRemoved):
        await asyncio.to_thread(session.command, iso.select_aid(iso.SSC_AID))


async def test_t0_wrong_le_on_old_select_is_wrong_length(
    make_card: MakeCard, session_factory: Callable[[Any], _PcscSession]
) -> None:
    """The driver's own path never sends it; sent raw, a T=0 card's answer maps to WrongLength."""
    await make_card(SocialSecurityApplet(protocol="T=0")).insert()
    assert await asyncio.to_thread(wait_card_state, True, timeout=10)
    from smartcard import scard

    session = session_factory(scard)
    await asyncio.to_thread(session.connect, VPCD_READER)
    assert session.t0
    old = iso.select_aid(iso.SSC_AID)
    with pytest.raises(WrongLength):
        await asyncio.to_thread(iso.transmit, session._send, old)  # T=1 shaping on a T=0 card
    assert await asyncio.to_thread(session.command, old)  # the driver's T=0 shaping works
