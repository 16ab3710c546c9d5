"""Card data layouts: ID check character, masked records, social security items, EMV directories.

Vectors are the published bytes of independent readers (records.py and bankcard.py name them):
leithergit/Z390Kylin Evolis_Z390_printer/evolis_z390_printer.cpp (EF05 records 01 and 03),
openemv/emv-utils tests/emv_build_candidate_list_test.c (PSE FCI, PSE records, application FCI).
"""

from __future__ import annotations

import datetime as dt

import pytest

from drivers.cardreader import records as r
from drivers.cardreader.errors import CardDataError, ProtocolViolation, RecordTagMismatch
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
        card_identifier="110100D15600000512345678FFFFFFFF",
        card_number="TEST00001",
        issuing_region="110100",
        spec_version="3.00",
        issued_on=dt.date(2020, 1, 1),
        expires_on=dt.date(2030, 1, 1),
        id_number="11010519491231002X",
        name="测试持卡人",
    )
    text = repr(card)
    for secret in ("11010519491231002X", "测试持卡人", "TEST00001", "110100D15600000512345678FFFFFFFF"):
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
        ({"i01": bytes.fromhex("ABCDEF00D15600000000000000000000")}, "region"),
        ({"i01": bytes.fromhex("330300D15600000599110145FFFFFF")}, "16 bytes, got 15"),
        ({"i09": "测\n试".encode("gbk")}, "control"),
        ({"i07": b"TEST\x01\x02"}, "ASCII"),
    ],
)
def test_invalid_items_are_bad_reads(overrides: dict[str, bytes], match: str) -> None:
    with pytest.raises(CardDataError, match=match):
        r.SocialSecurityCard.from_items(_items(**overrides))


# Z390Kylin's comments on its reads of EF05: `00 B2 01 04 00` and `00 B2 03 04 00`.
Z390_CARD_IDENTIFIER_RECORD = "0110330300D15600000599110145FFFFFFFF"
Z390_SPEC_VERSION_RECORD = "0304332E3030"


def test_published_card_identifier_is_binary_and_kept_as_hex() -> None:
    value = r.decode_item(r.ITEM_CARD_IDENTIFIER, bytes.fromhex(Z390_CARD_IDENTIFIER_RECORD))
    assert len(value) == 16 and not value.isascii()  # the old driver refused this as "not ASCII"
    version = r.decode_item(r.ITEM_SPEC_VERSION, bytes.fromhex(Z390_SPEC_VERSION_RECORD))
    card = r.SocialSecurityCard.from_items(_items(i01=value, i03=version))
    assert card.card_identifier == "330300D15600000599110145FFFFFFFF"
    assert card.issuing_region == "330300"  # Z390Kylin: the first 6 hex digits
    assert card.spec_version == "3.00"
    assert "330300D1" not in repr(card)


def test_item_encodings_as_published_readers_read_them() -> None:
    # SIDCardOperation.cpp / HD_XJDLL.cpp: card number and SSN as text, dates as hex digits (BCD),
    # the name as GBK padded with 00 (Z390Kylin pads its writes with "0" hex digits).
    items = _items(
        i05=bytes.fromhex("20190312"),
        i06=bytes.fromhex("FFFFFFFF"),
        i07=b"A12345678",
        i09="张三".encode("gbk") + bytes(26),
    )
    card = r.SocialSecurityCard.from_items(items)
    assert (card.issued_on, card.expires_on) == (dt.date(2019, 3, 12), None)
    assert (card.card_number, card.name) == ("A12345678", "张三")


def test_a_record_of_another_item_is_a_tag_mismatch() -> None:
    with pytest.raises(RecordTagMismatch) as info:
        r.decode_item(r.ITEM_ID_NUMBER, r.encode_item(0x0A, b"1"))
    assert (info.value.wanted, info.value.found) == (0x08, 0x0A)


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
    assert r.parse_ppse(fci) == r.BankCardInfo(aid="A000000333010101", label="UnionPay Debit", source="ppse")


def test_published_ppse_answer() -> None:
    # javisHuang/Learn emv/Initiate_Application.md: SELECT 2PAY.SYS.DDF01 answered by a Visa debit card.
    fci = bytes.fromhex(
        "6F2F840E325041592E5359532E4444463031A51DBF0C1A61184F07A0000000031010500A56495341204445424954870101"
    )
    assert r.parse_ppse(fci) == r.BankCardInfo("A0000000031010", "VISA DEBIT", "ppse")


def test_ppse_of_the_virtual_bank_card() -> None:
    # T=1: Le 00 brings the FCI at once.
    answer = BankApplet().process(bytes.fromhex("00A404000E325041592E5359532E444446303100"))
    assert answer[-2:] == b"\x90\x00"
    assert r.parse_ppse(answer[:-2]) == r.BankCardInfo("A000000333010101", "UnionPay Debit", "ppse")
    # T=0: the same SELECT with Le is malformed; without Le the FCI comes with 61xx + GET RESPONSE.
    t0 = BankApplet(protocol="T=0")
    assert t0.process(bytes.fromhex("00A404000E325041592E5359532E444446303100")) == b"\x67\x00"
    first = t0.process(bytes.fromhex("00A404000E325041592E5359532E4444463031"))
    assert first[0] == 0x61
    fci = t0.process(bytes((0x00, 0xC0, 0x00, 0x00, first[1])))
    assert fci[-2:] == b"\x90\x00"
    assert r.parse_ppse(fci[:-2]) == r.parse_ppse(answer[:-2])


@pytest.mark.parametrize(
    "fci",
    [b"", bytes.fromhex("6F00"), r.encode_tlv(0x6F, r.encode_tlv(0xA5, r.encode_tlv(0xBF0C, b"")))],
)
def test_ppse_without_applications_is_rejected(fci: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        r.parse_ppse(fci)


# openemv/emv-utils tests/emv_build_candidate_list_test.c: the PSE FCI, its records, an app FCI.
EMV_UTILS_PSE_FCI = "6F20840E315041592E5359532E4444463031A50E8801015F2D046E6C656E9F110101"
EMV_UTILS_PSE_RECORD = (
    "702961274F07A0000000031010500B56495341204352454449548701019F120B5649534120435245444954"
)
EMV_UTILS_PSE_RECORD_TWO_APPS = (
    "704461204F07A000000003202050055620504159870101730B9F0A080001050100000000"
    "61204F07A000000003201050055620504159870102730B9F0A080001050100000000"
)
EMV_UTILS_APP_FCI = (
    "6F2F8407A0000000032010A524500556205041598701025F2D046E6C656EBF0C109F4D020B059F0A080001050100000000"
)


def test_pse_fci_names_the_directory_short_ef() -> None:
    assert r.parse_pse_sfi(bytes.fromhex(EMV_UTILS_PSE_FCI)) == 1
    with pytest.raises(ProtocolViolation, match="SFI"):
        r.parse_pse_sfi(r.encode_tlv(0x6F, r.encode_tlv(0xA5, r.encode_tlv(0x88, b"\x1f"))))


def test_pse_records_list_applications_by_priority() -> None:
    entries = r.parse_pse_record(bytes.fromhex(EMV_UTILS_PSE_RECORD))
    assert r.choose_application(entries, "pse") == r.BankCardInfo("A0000000031010", "VISA CREDIT", "pse")
    two = r.parse_pse_record(bytes.fromhex(EMV_UTILS_PSE_RECORD_TWO_APPS))
    assert [aid for _, aid, _ in two] == ["A0000000032020", "A0000000032010"]
    assert r.choose_application(two, "pse").aid == "A0000000032020"  # priority 1 before 2
    with pytest.raises(ProtocolViolation, match="70 template"):
        r.parse_pse_record(bytes.fromhex("6F00"))


def test_application_fci_gives_aid_and_label() -> None:
    aid = bytes.fromhex("A0000000032010")
    info = r.parse_application_fci(bytes.fromhex(EMV_UTILS_APP_FCI), aid)
    assert info == r.BankCardInfo("A0000000032010", "V PAY", "aid")
    with pytest.raises(ProtocolViolation, match="FCI"):
        r.parse_application_fci(b"\x90\x00", aid)
