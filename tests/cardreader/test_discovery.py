"""Item addressing and payment-application discovery against the virtual cards' applets, no pcscd.

The applets are the same code the vpcd tests serve; here they answer through `apdu.transmit`
directly, so every fallback path and every bound runs in milliseconds. Hostile cards (endless
directories, junk records, files that never end) are small subclasses of the applets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from drivers.cardreader import apdu
from drivers.cardreader.bankcard import MAX_PSE_RECORDS, find_payment_application
from drivers.cardreader.errors import RecordNotFound, RecordTagMismatch, WrongCard
from drivers.cardreader.records import EF05, EF06, BankCardInfo, SocialSecurityCard, encode_item
from drivers.cardreader.sscard import MAX_SCAN_POSITIONS, read_social_security_items
from drivers.cardreader.vcard import (
    REORDERED_LAYOUT,
    SPEC_LAYOUT,
    BankApplet,
    SocialSecurityApplet,
    StaffApplet,
    _Command,
)

Command = Callable[[bytes], Awaitable[bytes]]


class Wire:
    """The applet behind apdu.transmit, shaped for its protocol; counts the APDUs."""

    def __init__(self, applet: SocialSecurityApplet | BankApplet | StaffApplet) -> None:
        self.applet = applet
        self.sent: list[bytes] = []

    def _send(self, command: bytes) -> bytes:
        self.sent.append(command)
        return self.applet.process(command)

    async def command(self, command: bytes) -> bytes:
        return apdu.transmit(self._send, command, t0=self.applet.protocol == "T=0")


@pytest.mark.parametrize("protocol", ["T=0", "T=1"])
@pytest.mark.parametrize(
    ("applet_kwargs", "ef05", "ef06"),
    [
        ({}, "position", "position"),
        ({"layout": REORDERED_LAYOUT}, "position", "identifier"),
        ({"layout": {EF05: SPEC_LAYOUT[EF05], EF06: (0x08, 0x0A, 0x09)}}, "position", "position+identifier"),
        ({"addressing": frozenset({"identifier"})}, "identifier", "identifier"),
        ({"layout": REORDERED_LAYOUT, "addressing": frozenset({"position"})}, "position", "scan"),
    ],
)
async def test_every_layout_and_addressing_reads_the_same_card(
    protocol: str, applet_kwargs: dict[str, object], ef05: str, ef06: str
) -> None:
    wire = Wire(SocialSecurityApplet(protocol=protocol, **applet_kwargs))  # type: ignore[arg-type]
    await wire.command(apdu.select_aid(apdu.SSC_AID))
    read = await read_social_security_items(wire.command)
    card = SocialSecurityCard.from_items(read.items)
    assert (card.id_number, card.name, card.card_number) == ("11010519491231002X", "测试持卡人", "TEST00001")
    assert (read.mode_summary(EF05), read.mode_summary(EF06)) == (ef05, ef06)


async def test_t0_sends_no_case4_le_and_t1_one_apdu_per_item() -> None:
    for protocol, per_read in (("T=1", 10), ("T=0", 18)):
        wire = Wire(SocialSecurityApplet(protocol=protocol))  # type: ignore[arg-type]
        await wire.command(apdu.select_aid(apdu.SSC_AID))
        await read_social_security_items(wire.command)
        assert len(wire.sent) == per_read, protocol
        if protocol == "T=0":
            assert all(apdu.case_of(c) != 4 for c in wire.sent)


class EndlessFile(SocialSecurityApplet):
    """EF06 answers every position with an item 0A record and refuses identifier addressing."""

    def _read_record(self, cmd: _Command) -> bytes:
        if self._ef == EF06 and cmd.p2 == 0x04:
            return self._reply(cmd, encode_item(0x0A, b"1"))
        return super()._read_record(cmd)


async def test_a_file_that_never_ends_is_scanned_a_bounded_number_of_times() -> None:
    wire = Wire(EndlessFile(addressing=frozenset({"position"})))
    await wire.command(apdu.select_aid(apdu.SSC_AID))
    with pytest.raises(RecordNotFound, match="item 08"):
        await read_social_security_items(wire.command)
    reads = sum(1 for c in wire.sent if c[1] == 0xB2)
    # EF05's five items, EF06 position 1, the refused identifier read, then the bounded scan.
    assert reads == 5 + 1 + 1 + MAX_SCAN_POSITIONS


async def test_identifier_answer_with_another_tag_is_refused() -> None:
    class Liar(SocialSecurityApplet):
        def _read_record(self, cmd: _Command) -> bytes:
            if self._ef == EF06 and cmd.p2 == 0x00:
                return self._reply(cmd, encode_item(0x0B, b"\x01"))
            return super()._read_record(cmd)

    wire = Wire(Liar(layout=REORDERED_LAYOUT))
    await wire.command(apdu.select_aid(apdu.SSC_AID))
    with pytest.raises(RecordTagMismatch) as info:
        await read_social_security_items(wire.command)
    assert (info.value.wanted, info.value.found) == (0x08, 0x0B)


# --- bank cards ---


@pytest.mark.parametrize(
    ("applet", "source", "apdus"),
    [
        (BankApplet(), "ppse", 1),
        (BankApplet(interface="contact"), "pse", 4),  # PPSE, PSE, record 1, record 2 (6A83)
        (BankApplet(interface="contact", protocol="T=0"), "pse", 6),  # + GET RESPONSE, 6C resend
        (BankApplet(interface="contact", pse=False), "aid", 3),  # PPSE, PSE, first UnionPay AID
    ],
)
async def test_bank_discovery_paths(applet: BankApplet, source: str, apdus: int) -> None:
    wire = Wire(applet)
    info = await find_payment_application(wire.command)
    assert info == BankCardInfo("A000000333010101", "UnionPay Debit", source)  # type: ignore[arg-type]
    assert len(wire.sent) == apdus
    assert all(not (c[1] == 0xB2 and c[3] != 0x0C) for c in wire.sent), "a payment record was read"


class EndlessDirectory(BankApplet):
    def command(self, cmd: _Command) -> bytes:
        if cmd.ins == 0xB2 and self._selected == apdu.PSE_AID:
            return self._reply(cmd, bytes.fromhex("7000") if cmd.p1 > 1 else self._entry_record())
        return super().command(cmd)

    def _entry_record(self) -> bytes:
        from drivers.cardreader.records import TAG_RECORD_TEMPLATE, encode_tlv

        return encode_tlv(TAG_RECORD_TEMPLATE, self._entry())


async def test_a_directory_that_never_ends_is_read_a_bounded_number_of_times() -> None:
    wire = Wire(EndlessDirectory(interface="contact"))
    info = await find_payment_application(wire.command)
    assert info.source == "pse"
    assert sum(1 for c in wire.sent if c[1] == 0xB2) == MAX_PSE_RECORDS


class JunkDirectory(BankApplet):
    def command(self, cmd: _Command) -> bytes:
        if cmd.ins == 0xB2 and self._selected == apdu.PSE_AID:
            return self._reply(cmd, b"\x6f\x02\x01\x02")  # not a 70 template
        return super().command(cmd)


async def test_an_unusable_pse_leaves_the_aid_list() -> None:
    wire = Wire(JunkDirectory(interface="contact"))
    assert (await find_payment_application(wire.command)).source == "aid"


async def test_no_payment_application_is_wrong_card() -> None:
    wire = Wire(StaffApplet())
    with pytest.raises(WrongCard, match="no PPSE, no PSE"):
        await find_payment_application(wire.command, device="cr")
    assert len(wire.sent) == 2 + 3


def test_spec_layout_matches_the_positions_the_driver_reads() -> None:
    from drivers.cardreader.records import EF05_POSITIONS, EF06_POSITIONS

    for fid, positions in ((EF05, EF05_POSITIONS), (EF06, EF06_POSITIONS)):
        for item, position in positions.items():
            assert SPEC_LAYOUT[fid][position - 1] == item


@pytest.mark.parametrize(
    ("protocol", "command", "answer"),
    [
        ("T=1", "00B2010400", "0812{ssn}9000"),  # EF06 position 1, Le 00: all of it
        ("T=1", "00B2010405", "6C14"),  # wrong Le: the right one in SW2
        ("T=1", "00B2010414", "0812{ssn}9000"),
        ("T=1", "00B2080400", "6A83"),  # the old misreading: no eighth record
        ("T=1", "00B2080000", "0812{ssn}9000"),  # by identifier
        ("T=1", "00B2000000", "6A86"),  # "current record": not supported here
        ("T=1", "00B2070400", "6A83"),
        ("T=1", "00B2012C12", "0110110100D15600000512345678FFFFFFFF9000"),  # short EF 5, position 1
        ("T=0", "00B2010400", "6C14"),  # T=0: P3 00 with 20 bytes held
        ("T=0", "00B2010414", "0812{ssn}9000"),
    ],
)
def test_virtual_card_read_record_answers(protocol: str, command: str, answer: str) -> None:
    applet = SocialSecurityApplet(protocol=protocol)  # type: ignore[arg-type]
    for setup in ("00A404000F7378312E73682EC9E7BBE1B1A3D5CF", "00A4020002EF06"):
        assert applet.process(bytes.fromhex(setup))[-2:] in (b"\x90\x00", b"\x61\x13")
    ssn = b"11010519491231002X".hex().upper()
    assert applet.process(bytes.fromhex(command)).hex().upper() == answer.format(ssn=ssn)
