"""The ID card text block, nation/gender codes, the ISO 7064 MOD 11-2 check and masking."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from drivers.idcard.identity import (
    NATIONS,
    CardDataError,
    CheckDigitMismatch,
    Gender,
    IdCard,
    check_digit,
    encode_text_block,
    id_number_valid,
    mask_id,
    parse_text_block,
    sample_card,
)


def raw_block(**fields: str) -> bytes:
    """A text block built field by field, as the card stores it (UCS-2 LE, space padded)."""
    values = {
        "name": "张三",
        "gender": "1",
        "nation": "01",
        "birth": "19491231",
        "address": "北京市朝阳区示例路1号",
        "number": "11010519491231002X",
        "issuer": "北京市公安局朝阳分局",
        "start": "20100101",
        "end": "长期",
        "reserved": "",
    }
    values.update(fields)
    widths = (15, 1, 2, 8, 35, 18, 15, 8, 8, 18)
    text = "".join(v.ljust(w) for v, w in zip(values.values(), widths, strict=True))
    return text.encode("utf-16-le")


@pytest.mark.parametrize(
    ("first17", "check"),
    [("11010519491231002", "X"), ("44052418800101001", "4")],  # GB 11643 examples
)
def test_check_digit_known_answers(first17: str, check: str) -> None:
    assert check_digit(first17) == check
    assert id_number_valid(first17 + check)
    assert id_number_valid(first17 + check.lower())


def test_check_digit_rejects_a_changed_digit() -> None:
    assert not id_number_valid("110105194912310021")
    assert not id_number_valid("11010519491231002")
    assert not id_number_valid("1101051949123100XX")


def test_parse_block_with_no_expiry() -> None:
    card = parse_text_block(raw_block(), photo=b"wlt")
    assert card.name == "张三"
    assert card.gender is Gender.MALE
    assert card.nation == "汉"
    assert card.birth_date == dt.date(1949, 12, 31)
    assert card.address == "北京市朝阳区示例路1号"
    assert card.id_number == "11010519491231002X"
    assert card.valid_from == dt.date(2010, 1, 1)
    assert card.valid_to is None
    assert card.photo == b"wlt"


def test_parse_block_with_end_date_and_other_codes() -> None:
    card = parse_text_block(raw_block(gender="2", nation="56", end="20300101"))
    assert card.gender is Gender.FEMALE
    assert card.nation == "基诺"
    assert card.valid_to == dt.date(2030, 1, 1)
    assert parse_text_block(raw_block(nation="97")).nation == "其他"


def test_nation_table_is_complete() -> None:
    assert len(NATIONS) == 58
    assert NATIONS["05"] == "维吾尔"


@pytest.mark.parametrize(
    "fields",
    [
        {"gender": "3"},
        {"nation": "57"},
        {"birth": "19491332"},
        {"end": "forever"},
        {"name": ""},
    ],
)
def test_bad_fields_are_card_data_errors(fields: dict[str, str]) -> None:
    with pytest.raises(CardDataError):
        parse_text_block(raw_block(**fields))


def test_wrong_check_digit_is_not_an_identity() -> None:
    with pytest.raises(CheckDigitMismatch):
        parse_text_block(raw_block(number="110105194912310021"))


def test_wrong_block_size_is_rejected() -> None:
    with pytest.raises(CardDataError):
        parse_text_block(raw_block()[:-2])


def test_encode_parse_round_trip() -> None:
    card = sample_card()
    assert parse_text_block(encode_text_block(card), photo=card.photo) == card
    forever = sample_card(valid_to=None)
    assert parse_text_block(encode_text_block(forever), photo=forever.photo) == forever


def test_repr_masks_everything_personal() -> None:
    card = parse_text_block(raw_block())
    text = repr(card) + str(card)
    assert "张三" not in text and "1949" not in text and "朝阳" not in text
    assert "11010519491231002X" not in text
    assert card.masked_id == "110***********002X"
    assert card.masked_id in text
    assert mask_id("12345") == "*****"


def test_card_is_frozen() -> None:
    card = sample_card()
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.name = "x"  # type: ignore[misc]
    assert isinstance(card, IdCard)
