"""Card data layouts: ID check character, masked records, social security items, PPSE TLV."""

from __future__ import annotations

import datetime as dt

import pytest

from drivers.cardreader import records as r
from drivers.cardreader.errors import CardDataError, ProtocolViolation
from drivers.cardreader.vcard import BankApplet, SocialSecurityData


def test_id_check_character_follows_iso7064_mod_11_2() -> None:
    # The worked example of GB 11643-1999.
    assert r.id_check_char("11010519491231002") == "X"
    assert r.id_number_valid("11010519491231002X")
    assert r.id_number_valid("11010519491231002x")
    assert not r.id_number_valid("110105194912310021")
    assert not r.id_number_valid("1101051949123100X")
    assert not r.id_number_valid("１１010519491231002X")  # full-width digits are not digits here


def test_masks() -> None:
    assert r.mask_id("11010519491231002X") == "110***********002X"
    assert r.mask_id("TEST00001") == "TES**0001"
    assert r.mask_id("1234") == "****"
    assert r.mask_name("测试持卡人") == "测****"


def _items(**overrides: bytes) -> dict[int, bytes]:
    items = SocialSecurityData().items()
    for key, value in overrides.items():
        items[int(key[1:], 16)] = value
    return items


def test_social_security_record_from_items_and_masked_repr() -> None:
    card = r.SocialSecurityCard.from_items(_items())
    assert card == r.SocialSecurityCard(
        card_number="TEST00001",
        issuing_region="110100",
        spec_version="3.00",
        issued_on=dt.date(2020, 1, 1),
        expires_on=dt.date(2030, 1, 1),
        id_number="11010519491231002X",
        name="测试持卡人",
    )
    text = repr(card)
    for secret in ("11010519491231002X", "测试持卡人", "TEST00001"):
        assert secret not in text
        assert secret not in str(card)
    assert "110***********002X" in text


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"i08": b"110105194912310021"}, "check character"),
        ({"i05": b"\x20\x20\x13\x01"}, "calendar date"),
        ({"i05": b"\x20\x2a\x01\x01"}, "not BCD"),
        ({"i06": b"\x20\x30\x01"}, "4 BCD bytes"),
        ({"i09": b"\xff\xfe\x00"}, "GBK"),
        ({"i09": b"\x00" * 30}, "empty"),
        ({"i01": b"ABCDEF0000000000"}, "region"),
        ({"i07": b"TEST\x01\x02"}, "ASCII"),
    ],
)
def test_invalid_items_are_bad_reads(overrides: dict[str, bytes], match: str) -> None:
    with pytest.raises(CardDataError, match=match):
        r.SocialSecurityCard.from_items(_items(**overrides))


def test_missing_item_is_named() -> None:
    items = _items()
    del items[r.ITEM_NAME]
    with pytest.raises(CardDataError, match="09"):
        r.SocialSecurityCard.from_items(items)


def test_open_ended_expiry() -> None:
    card = r.SocialSecurityCard.from_items(_items(i06=b"\x00\x00\x00\x00"))
    assert card.expires_on is None


def test_item_framing() -> None:
    assert r.decode_item(7, r.encode_item(7, b"TEST00001")) == b"TEST00001"
    with pytest.raises(ProtocolViolation, match="tagged 08"):
        r.decode_item(7, r.encode_item(8, b"x"))
    with pytest.raises(ProtocolViolation, match="length byte"):
        r.decode_item(7, b"\x07\x05abc")
    with pytest.raises(ProtocolViolation, match="record of 1"):
        r.decode_item(7, b"\x07")


def test_tlv_long_tags_and_lengths() -> None:
    value = bytes(200)
    blob = r.encode_tlv(0xBF0C, value) + b"\x00\x00" + r.encode_tlv(0x9F12, b"ab")
    assert blob[:4] == bytes.fromhex("BF0C81C8")
    assert list(r.iter_tlv(blob)) == [(0xBF0C, value), (0x9F12, b"ab")]
    with pytest.raises(ProtocolViolation, match="runs past"):
        list(r.iter_tlv(bytes.fromhex("5A08112233")))
    with pytest.raises(ProtocolViolation, match="bad length"):
        list(r.iter_tlv(bytes.fromhex("5A8500")))


def _ppse(*entries: tuple[str, str, int | None]) -> bytes:
    directory = b""
    for aid, label, priority in entries:
        entry = r.encode_tlv(r.TAG_AID, bytes.fromhex(aid)) + r.encode_tlv(r.TAG_LABEL, label.encode())
        if priority is not None:
            entry += r.encode_tlv(r.TAG_PRIORITY, bytes((priority,)))
        directory += r.encode_tlv(r.TAG_DIRECTORY_ENTRY, entry)
    return r.encode_tlv(
        r.TAG_FCI,
        r.encode_tlv(0x84, b"2PAY.SYS.DDF01")
        + r.encode_tlv(r.TAG_FCI_PROPRIETARY, r.encode_tlv(0xBF0C, directory)),
    )


def test_ppse_picks_the_highest_priority_application() -> None:
    fci = _ppse(
        ("A0000000031010", "VISA CREDIT", None),
        ("A000000333010101", "UnionPay Debit", 1),
        ("A0000000041010", "Mastercard", 2),
    )
    assert r.parse_ppse(fci) == r.BankCardInfo(aid="A000000333010101", label="UnionPay Debit")


def test_ppse_of_the_virtual_bank_card() -> None:
    applet = BankApplet()
    first = applet.process(bytes.fromhex("00A404000E325041592E5359532E444446303100"))
    assert first[0] == 0x61
    fci = applet.process(bytes((0x00, 0xC0, 0x00, 0x00, first[1])))
    assert fci[-2:] == b"\x90\x00"
    assert r.parse_ppse(fci[:-2]) == r.BankCardInfo("A000000333010101", "UnionPay Debit")


@pytest.mark.parametrize(
    "fci",
    [b"", bytes.fromhex("6F00"), r.encode_tlv(0x6F, r.encode_tlv(0xA5, r.encode_tlv(0xBF0C, b"")))],
)
def test_ppse_without_applications_is_rejected(fci: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        r.parse_ppse(fci)
