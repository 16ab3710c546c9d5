"""Other holders' ID cards in the SAM_V text block: the foreigner's permanent residence card (`I`),
the residence permit for Hong Kong, Macao and Taiwan residents (`J`), the 2023 foreigner's card
(`Y`), and types not parsed.

Vectors are built here byte by byte from the published layouts, not with the driver's encoders:

- `I`: the data item table (https://www.afzhan.com/st170652/news_212938.html: English name 120,
  gender 2, number 30, nationality 6, Chinese name 30, valid from/to 16 each, birth date 16,
  version 4, authority code 8, type 2 = "I", reserved 6), cross-read at the fixed offsets an
  IDCard.dll C# sample uses (number 122..152, sex byte 120, birth 220..236, authority 240..248,
  type 248..250). Field values are the specimen card a Decard reader integration prints
  (证件样本, PAK, 19800101, PAK310080010103, 20230808-20330807).
- `J`: the resident layout with the nation blank, then pass number 18, issue count 4 (a Miaxis
  app's analysiGATCardInfo), cross-read at the C# sample's offsets (pass number 220..238, issue
  count 238..242). Number 810000199408230021 is howardli/CredentialKit's HK test vector.
- `Y`: the PC/SC reader library's `t_idforeigner2023` sizes (Chinese name 30, sex 2, renewals 4,
  birth 16, English name 70, number 36, reserved 30, dates 16+16, English name 22, nationality 6,
  type 2, link 6), cross-read at the IDCard.dll C# sample's offsets (renewals 32..36, English name
  52..122, number 122..158, English name 220..242, nationality 242..248). Values: the specimen
  card the Decard integration prints (931586198001010028, 20230808-20330807, 19800101).
- Check digits: ICAO 7-3-1 vectors KAZ110090123105 (valid) / KAZ110090123107 (invalid) from
  CredentialKit's ForeignerPermanentResidenceIdNumberProcessorTest; MOD 11-2 vectors
  810000199408230021, 820000199408230023 (valid), 810000199408230022 (invalid) from its
  HkMoResidencePermitNumberProcessorTest, 830000199201300022 from TwResidencePermitNumberProcessorTest;
  2023 numbers 911398199012310021 (CredentialKit) and 932682198501010017, 911124198108030024
  (the National Immigration Administration's examples, quoted in a public validator's tests).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest

from drivers.idcard.card_types import UnsupportedCardType, encode_card, parse_card, type_code
from drivers.idcard.foreigner import (
    ForeignPermanentCard,
    foreigner_number_valid,
    icao_check_digit,
    sample_foreigner_card,
)
from drivers.idcard.foreigner2023 import ForeignPermanentCard2023, sample_foreigner2023_card
from drivers.idcard.hmt import HmtResidencePermit, sample_hmt_permit
from drivers.idcard.identity import (
    CardDataError,
    CheckDigitMismatch,
    Gender,
    IdCard,
    id_number_valid,
    parse_text_block,
    sample_card,
)
from gateway.auth.subjects import mask_id, valid_document_number


def ucs2(value: str, size: int) -> bytes:
    """One field as the card stores it: UCS-2 LE, padded with spaces to `size` bytes."""
    raw = value.encode("utf-16-le")
    assert len(raw) <= size and size % 2 == 0
    return raw + " ".encode("utf-16-le") * ((size - len(raw)) // 2)


SPECIMEN_I = {
    "english_name": "ZHENGJIAN,YANGBEN ZHENG JIAN YANG BEN ZHENGJIAN Y",
    "gender": "2",
    "number": "PAK310080010103",
    "nationality": "PAK",
    "chinese_name": "证件样本证件样本证件样本证件",
    "valid_from": "20230808",
    "valid_to": "20330807",
    "birth_date": "19800101",
    "version": "15",
    "authority": "0001",
}


def i_block(**changes: str) -> bytes:
    """A foreigner's card text block in the published byte sizes."""
    v = {**SPECIMEN_I, **changes}
    block = (
        ucs2(v["english_name"], 120)
        + ucs2(v["gender"], 2)
        + ucs2(v["number"], 30)
        + ucs2(v["nationality"], 6)
        + ucs2(v["chinese_name"], 30)
        + ucs2(v["valid_from"], 16)
        + ucs2(v["valid_to"], 16)
        + ucs2(v["birth_date"], 16)
        + ucs2(v["version"], 4)
        + ucs2(v["authority"], 8)
        + ucs2(v.get("type", "I"), 2)
        + ucs2("", 6)
    )
    assert len(block) == 256
    return block


SPECIMEN_J = {
    "name": "测试港人",
    "gender": "2",
    "birth_date": "19940823",
    "address": "广东省深圳市福田区示例路1号",
    "number": "810000199408230021",
    "issuer": "深圳市公安局福田分局",
    "valid_from": "20180901",
    "valid_to": "20230901",
    "pass_number": "H12345678",
    "issue_count": "01",
}


def j_block(**changes: str) -> bytes:
    """An HMT residence permit text block in the published byte sizes."""
    v = {**SPECIMEN_J, **changes}
    block = (
        ucs2(v["name"], 30)
        + ucs2(v["gender"], 2)
        + ucs2(v.get("nation", ""), 4)
        + ucs2(v["birth_date"], 16)
        + ucs2(v["address"], 70)
        + ucs2(v["number"], 36)
        + ucs2(v["issuer"], 30)
        + ucs2(v["valid_from"], 16)
        + ucs2(v["valid_to"], 16)
        + ucs2(v["pass_number"], 18)
        + ucs2(v["issue_count"], 4)
        + ucs2("", 6)
        + ucs2(v.get("type", "J"), 2)
        + ucs2("", 6)
    )
    assert len(block) == 256
    return block


SPECIMEN_Y = {
    "chinese_name": "证件样本证件样本证件样本证件样",
    "gender": "2",
    "renewals": "00",
    "birth_date": "19800101",
    "english_name": "ZHENGJIAN, YANGBEN ZHENG JIAN YANG",
    "number": "931586198001010028",
    "valid_from": "20230808",
    "valid_to": "20330807",
    "english_name_more": "",
    "nationality": "PAK",
    "previous_link": "",
}


def y_block(**changes: str) -> bytes:
    """A 2023 foreigner's card text block in the published byte sizes."""
    v = {**SPECIMEN_Y, **changes}
    block = (
        ucs2(v["chinese_name"], 30)
        + ucs2(v["gender"], 2)
        + ucs2(v["renewals"], 4)
        + ucs2(v["birth_date"], 16)
        + ucs2(v["english_name"], 70)
        + ucs2(v["number"], 36)
        + ucs2("", 30)
        + ucs2(v["valid_from"], 16)
        + ucs2(v["valid_to"], 16)
        + ucs2(v["english_name_more"], 22)
        + ucs2(v["nationality"], 6)
        + ucs2(v.get("type", "Y"), 2)
        + ucs2(v["previous_link"], 6)
    )
    assert len(block) == 256
    return block


def at(block: bytes, start: int, end: int) -> str:
    """A field read at fixed byte offsets, the way the C# sample reads it."""
    return block[start:end].decode("utf-16-le").rstrip()


# --- the two layouts agree -------------------------------------------------------------------


def test_the_published_sizes_put_each_field_where_the_other_source_reads_it() -> None:
    block = i_block()
    assert at(block, 122, 152) == "PAK310080010103"
    assert block[120:121] == b"2"
    assert at(block, 220, 236) == "19800101"
    assert at(block, 240, 248) == "0001"
    assert at(block, 248, 250) == "I"
    permit = j_block()
    assert at(permit, 122, 158) == "810000199408230021"
    assert at(permit, 220, 238) == "H12345678"
    assert at(permit, 238, 242) == "01"
    assert at(permit, 248, 250) == "J"
    new = y_block(renewals="01", english_name_more="ABC")
    assert at(new, 32, 36) == "01"
    assert at(new, 52, 122) == "ZHENGJIAN, YANGBEN ZHENG JIAN YANG"
    assert at(new, 122, 158) == "931586198001010028"
    assert at(new, 220, 242) == "ABC"
    assert at(new, 242, 248) == "PAK"
    assert at(new, 248, 250) == "Y"


# --- check characters ------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["PAK310080010103", "KAZ110090123105"])
def test_foreigner_number_check_digit_is_icao_7_3_1(number: str) -> None:
    assert icao_check_digit(number[:14]) == number[14]
    assert foreigner_number_valid(number)
    assert valid_document_number("foreign_permanent", number)


@pytest.mark.parametrize(
    "number", ["KAZ110090123107", "KAZ11009012310", "KA1110090123105", "kaz110090123105"]
)
def test_foreigner_number_failures(number: str) -> None:
    assert not foreigner_number_valid(number)
    assert not valid_document_number("foreign_permanent", number)


def test_foreigner_number_is_not_iso_7064() -> None:
    # The resident rule does not even apply: 15 characters, three of them letters.
    assert not id_number_valid("PAK310080010103")
    assert not valid_document_number("resident", "PAK310080010103")


@pytest.mark.parametrize("number", ["810000199408230021", "820000199408230023", "830000199201300022"])
def test_hmt_number_is_iso_7064_mod_11_2(number: str) -> None:
    assert id_number_valid(number)
    assert valid_document_number("hmt_residence", number)


@pytest.mark.parametrize(
    "number", ["931586198001010028", "911398199012310021", "932682198501010017", "911124198108030024"]
)
def test_2023_number_is_iso_7064_mod_11_2(number: str) -> None:
    assert id_number_valid(number)
    assert valid_document_number("foreign_permanent_2023", number)


def test_2023_number_failures() -> None:
    assert not valid_document_number("foreign_permanent_2023", "911398199012310022")  # check
    assert not valid_document_number("foreign_permanent_2023", "11010519491231002X")  # not 9...
    assert not valid_document_number("foreign_permanent_2023", "PAK310080010103")


def test_hmt_number_failures() -> None:
    assert not valid_document_number("hmt_residence", "810000199408230022")  # check character
    assert not valid_document_number("hmt_residence", "11010519491231002X")  # not 81/82/83 0000
    assert valid_document_number("resident", "11010519491231002X")
    assert not valid_document_number("passport", "11010519491231002X")


# --- the foreigner's card (I) ----------------------------------------------------------------


def test_the_old_reading_of_an_i_card_was_unreadable() -> None:
    with pytest.raises(CardDataError):
        parse_text_block(i_block())


def test_i_card_parses_into_its_own_record() -> None:
    card = parse_card(i_block(), photo=b"wlt", fingerprint=None)
    assert isinstance(card, ForeignPermanentCard)
    assert card.document_type == "foreign_permanent"
    assert card.document_number == card.number == "PAK310080010103"
    assert card.english_name == SPECIMEN_I["english_name"]
    assert card.chinese_name == SPECIMEN_I["chinese_name"]
    assert card.gender is Gender.FEMALE
    assert card.nationality == "PAK"
    assert card.birth_date == dt.date(1980, 1, 1)
    assert (card.valid_from, card.valid_to) == (dt.date(2023, 8, 8), dt.date(2033, 8, 7))
    assert (card.version, card.issuer_code) == ("15", "0001")
    assert card.photo == b"wlt"
    assert card.masked_number == mask_id("PAK310080010103") == "PAK********0103"


def test_i_card_without_a_chinese_name_reads() -> None:
    assert parse_card(i_block(chinese_name="")).chinese_name == ""  # type: ignore[union-attr]


def test_i_card_with_a_bad_check_digit_is_a_bad_read() -> None:
    with pytest.raises(CheckDigitMismatch):
        parse_card(i_block(number="PAK310080010104"))


@pytest.mark.parametrize(
    "changes",
    [
        {"number": "PA1310080010103"},
        {"english_name": ""},
        {"english_name": "zhang"},
        {"nationality": "P1K"},
        {"gender": "7"},
        {"birth_date": "19801301"},
        {"valid_to": "20200101"},  # before valid_from
        {"valid_to": "长期"},  # a foreigner's card always ends
        {"version": "1."},
    ],
)
def test_i_card_bad_fields_are_bad_reads(changes: dict[str, str]) -> None:
    with pytest.raises(CardDataError):
        parse_card(i_block(**changes))


# --- the HMT residence permit (J) ------------------------------------------------------------


def test_the_old_reading_of_a_j_card_was_unreadable() -> None:
    with pytest.raises(CardDataError):
        parse_text_block(j_block())


def test_j_card_parses_into_its_own_record() -> None:
    card = parse_card(j_block(), photo=b"wlt")
    assert isinstance(card, HmtResidencePermit)
    assert card.document_type == "hmt_residence"
    assert card.document_number == card.id_number == "810000199408230021"
    assert card.region == "hong_kong"
    assert card.name == "测试港人"
    assert card.gender is Gender.FEMALE
    assert card.birth_date == dt.date(1994, 8, 23)
    assert card.address == SPECIMEN_J["address"]
    assert card.issuer == SPECIMEN_J["issuer"]
    assert (card.valid_from, card.valid_to) == (dt.date(2018, 9, 1), dt.date(2023, 9, 1))
    assert (card.travel_permit_number, card.issue_count) == ("H12345678", 1)
    assert card.masked_number == "810***********0021"
    macao = parse_card(j_block(number="820000199408230023"))
    assert isinstance(macao, HmtResidencePermit) and macao.region == "macao"
    taiwan = parse_card(j_block(number="830000199201300022", pass_number="12345678"))
    assert isinstance(taiwan, HmtResidencePermit) and taiwan.region == "taiwan"


def test_j_card_with_a_bad_check_character_is_a_bad_read() -> None:
    with pytest.raises(CheckDigitMismatch):
        parse_card(j_block(number="810000199408230022"))


@pytest.mark.parametrize(
    "changes",
    [
        {"number": "11010519491231002X"},  # a resident number on a J card
        {"name": ""},
        {"pass_number": ""},
        {"pass_number": "H-1234567"},
        {"issue_count": "x1"},
        {"birth_date": "1994082"},
        {"gender": "5"},
    ],
)
def test_j_card_bad_fields_are_bad_reads(changes: dict[str, str]) -> None:
    with pytest.raises(CardDataError):
        parse_card(j_block(**changes))


# --- types not parsed -----------------------------------------------------------------------


# --- the 2023 foreigner's card (Y) -----------------------------------------------------------


def test_the_old_reading_of_a_y_card_was_unreadable() -> None:
    with pytest.raises(CardDataError):
        parse_text_block(y_block())


def test_y_card_parses_into_its_own_record() -> None:
    card = parse_card(y_block(), photo=b"wlt")
    assert isinstance(card, ForeignPermanentCard2023)
    assert card.document_type == "foreign_permanent_2023"
    assert card.document_number == card.number == "931586198001010028"
    assert card.chinese_name == SPECIMEN_Y["chinese_name"]
    assert card.english_name == SPECIMEN_Y["english_name"]
    assert card.gender is Gender.FEMALE
    assert card.nationality == "PAK"
    assert card.birth_date == dt.date(1980, 1, 1)
    assert (card.valid_from, card.valid_to) == (dt.date(2023, 8, 8), dt.date(2033, 8, 7))
    assert (card.renewals, card.previous_link) == (0, "")
    assert card.masked_number == "931***********0028"


def test_y_card_english_name_continues_in_its_second_field() -> None:
    first = "ZHENGJIAN YANGBEN ZHENGJIAN YANGBEN"  # 35 characters: the first field is full
    assert len(first) == 35
    card = parse_card(y_block(english_name=first, english_name_more=" ZHENG JIAN", previous_link="010"))
    assert isinstance(card, ForeignPermanentCard2023)
    assert card.english_name == first + " ZHENG JIAN"
    assert card.previous_link == "010"


def test_y_card_with_a_bad_check_character_is_a_bad_read() -> None:
    with pytest.raises(CheckDigitMismatch):
        parse_card(y_block(number="931586198001010029"))


@pytest.mark.parametrize(
    "changes",
    [
        {"number": "PAK310080010103"},
        {"number": "131586198001010028"},
        {"english_name": ""},
        {"nationality": "586"},
        {"renewals": "a1"},
        {"valid_to": "20200101"},
        {"gender": "x"},
    ],
)
def test_y_card_bad_fields_are_bad_reads(changes: dict[str, str]) -> None:
    with pytest.raises(CardDataError):
        parse_card(y_block(**changes))


def test_an_unknown_type_is_unsupported_never_a_guess() -> None:
    with pytest.raises(UnsupportedCardType) as caught:
        parse_card(y_block(type="Z"))
    assert caught.value.code == "Z"
    assert "931586198001010028" not in str(caught.value)


@pytest.mark.parametrize(
    ("pair", "code"), [(b"Z\x00", "Z"), (b"\xff\xfe", "0xfffe"), (b"i\x00", "0x6900"), (b"1\x00", "0x3100")]
)
def test_any_other_type_is_unsupported_with_a_safe_code(pair: bytes, code: str) -> None:
    block = bytearray(i_block())
    block[248:250] = pair
    assert type_code(bytes(block)) == code
    with pytest.raises(UnsupportedCardType) as caught:
        parse_card(bytes(block))
    assert caught.value.code == code


def test_a_resident_card_still_reads_and_a_zero_filled_type_is_resident() -> None:
    card = sample_card()
    block = bytearray(encode_card(card))
    assert type_code(bytes(block)) == " "
    assert parse_card(bytes(block), photo=card.photo) == card
    block[248:250] = b"\x00\x00"
    assert isinstance(parse_card(bytes(block)), IdCard)


def test_wrong_block_size_is_a_bad_read() -> None:
    with pytest.raises(CardDataError):
        parse_card(i_block()[:-2])


# --- records --------------------------------------------------------------------------------


def test_simulator_encoders_round_trip() -> None:
    for card in (sample_foreigner_card(), sample_hmt_permit(), sample_foreigner2023_card()):
        assert parse_card(encode_card(card), photo=card.photo) == card


def test_reprs_mask_everything_personal() -> None:
    foreign = parse_card(i_block())
    permit = parse_card(j_block())
    new = parse_card(y_block())
    text = repr(foreign) + str(permit) + repr(new)
    for secret in (
        "ZHENGJIAN",
        "证件样本",
        "PAK310080010103",
        "1980",
        "测试港人",
        "810000199408230021",
        "H12345678",
        "福田",
        "931586198001010028",
    ):
        assert secret not in text
    assert "PAK********0103" in text and "810***********0021" in text


def test_records_are_frozen() -> None:
    card = sample_foreigner_card()
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.number = "x"  # type: ignore[misc]


# --- hostile blocks -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["I", "J", "Y", " "])
def test_junk_blocks_are_bad_reads_or_valid_records_never_anything_else(code: str) -> None:
    rng = random.Random(f"junk-{code}")
    document_type = {
        "I": "foreign_permanent",
        "J": "hmt_residence",
        "Y": "foreign_permanent_2023",
        " ": "resident",
    }[code]
    vectors = {"I": i_block(), "J": j_block(), "Y": y_block(), " ": encode_card(sample_card())}
    records = 0
    for i in range(1500):
        if i % 3 == 0:
            block = bytearray(rng.randbytes(256))
        else:  # a valid block with a few bytes flipped: closer to what a bad read looks like
            block = bytearray(vectors[code])
            for _ in range(rng.randint(1, 6)):
                block[rng.randrange(248)] = rng.randrange(256)
        block[248:250] = code.encode("utf-16-le")
        try:
            card = parse_card(bytes(block))
        except CardDataError:
            continue
        records += 1
        assert card.document_type == document_type
        assert valid_document_number(document_type, card.document_number)
    assert records > 0, "some flips land in free text and still read"
