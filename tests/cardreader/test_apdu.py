"""The pure APDU layer: command bytes, the 61xx / 6Cxx dance and status words as typed errors."""

from __future__ import annotations

import pytest

from drivers.base import DeviceRejected
from drivers.cardreader import apdu
from drivers.cardreader import errors as e


class ScriptedCard:
    """A transmit function answering from a script and recording what was sent."""

    def __init__(self, *answers: str) -> None:
        self.answers = [bytes.fromhex(a) for a in answers]
        self.sent: list[str] = []

    def __call__(self, command: bytes) -> bytes:
        self.sent.append(command.hex().upper())
        return self.answers.pop(0)


def test_command_builders_match_the_documented_bytes() -> None:
    assert apdu.select_aid(apdu.SSC_AID).hex().upper() == ("00A404000F7378312E73682EC9E7BBE1B1A3D5CF00")
    assert apdu.select_aid(apdu.PPSE_AID).hex().upper() == ("00A404000E325041592E5359532E444446303100")
    assert apdu.select_ef(b"\xef\x05").hex().upper() == "00A4020002EF05"
    assert apdu.read_record(0x07).hex().upper() == "00B2070400"
    assert apdu.read_binary(0x0102, 0x10).hex().upper() == "00B0010210"
    assert apdu.get_response(0x1C).hex().upper() == "00C000001C"
    assert apdu.get_uid().hex().upper() == "FFCA000000"


@pytest.mark.parametrize(
    ("command", "le", "expected"),
    [
        ("00B2070400", 0x0B, "00B207040B"),  # case 2: Le replaced
        ("00A4020002EF05", 0x10, "00A4020002EF0510"),  # case 3: Le added
        ("00A4040002A00100", 0x20, "00A4040002A00120"),  # case 4: Le replaced
        ("00840000", 0x08, "0084000008"),  # case 1: Le added
    ],
)
def test_with_le_handles_every_case(command: str, le: int, expected: str) -> None:
    assert apdu.with_le(bytes.fromhex(command), le).hex().upper() == expected


def test_with_le_rejects_a_malformed_apdu() -> None:
    with pytest.raises(ValueError, match="Lc"):
        apdu.with_le(bytes.fromhex("00A4040005A001"), 0)


# (script of card answers, expected commands sent, expected data)
FLOWS = [
    pytest.param(["AABB9000"], ["00B2070400"], "AABB", id="9000-direct"),
    pytest.param(
        ["610B", "07094142434445464748499000"],
        ["00B2070400", "00C000000B"],
        "0709414243444546474849",
        id="61xx-get-response",
    ),
    pytest.param(
        ["6C0B", "07094142434445464748499000"],
        ["00B2070400", "00B207040B"],
        "0709414243444546474849",
        id="6Cxx-resend-with-le",
    ),
    pytest.param(
        ["6104", "01026103", "0304059000"],
        ["00B2070400", "00C0000004", "00C0000003"],
        "0102030405",
        id="61xx-chained",
    ),
    pytest.param(
        ["6110", "6C04", "010203049000"],
        ["00B2070400", "00C0000010", "00C0000004"],
        "01020304",
        id="61xx-then-6Cxx-on-get-response",
    ),
    pytest.param(
        ["6100", "AA" * 256 + "9000"], ["00B2070400", "00C0000000"], "AA" * 256, id="6100-means-256"
    ),
]


@pytest.mark.parametrize(("answers", "sent", "data"), FLOWS)
def test_transmit_follows_status_words(answers: list[str], sent: list[str], data: str) -> None:
    card = ScriptedCard(*answers)
    assert apdu.transmit(card, apdu.read_record(0x07)).hex().upper() == data
    assert card.sent == sent
    assert card.answers == []


ERRORS = [
    ("6700", e.WrongLength),
    ("6982", e.SecurityStatusNotSatisfied),
    ("6983", e.AuthenticationBlocked),
    ("6985", e.ConditionsNotSatisfied),
    ("6986", e.CommandNotAllowed),
    ("6A82", e.FileNotFound),
    ("6A83", e.RecordNotFound),
    ("6A86", e.WrongParameters),
    ("6B00", e.WrongParameters),
    ("6D00", e.InsNotSupported),
    ("6E00", e.ClaNotSupported),
    ("6F00", e.CardFailure),
    ("6400", e.ApduError),
]


@pytest.mark.parametrize(("sw", "error"), ERRORS)
def test_status_words_map_to_typed_errors(sw: str, error: type[e.ApduError]) -> None:
    card = ScriptedCard(sw)
    with pytest.raises(e.ApduError) as info:
        apdu.transmit(card, apdu.select_ef(b"\xef\x05"), device="cr")
    assert type(info.value) is error
    assert info.value.sw == int(sw, 16)
    assert info.value.code == sw
    assert info.value.device == "cr"
    assert isinstance(info.value, DeviceRejected)
    assert sw in str(info.value) and "00 A4 02 00" in str(info.value)


def test_error_after_get_response_is_reported() -> None:
    card = ScriptedCard("6105", "6A82")
    with pytest.raises(e.FileNotFound):
        apdu.transmit(card, apdu.select_aid(apdu.SSC_AID))


def test_exchange_returns_non_success_words_without_raising() -> None:
    response = apdu.exchange(ScriptedCard("01026283"), apdu.select_ef(b"\xef\x05"))
    assert (response.data, response.sw, response.ok) == (b"\x01\x02", 0x6283, False)


@pytest.mark.parametrize(
    ("answers", "match"),
    [
        (["90"], "at least SW1 SW2"),
        (["", "9000"], "at least SW1 SW2"),
        (["6C0B", "6C0C"], "asked twice"),
        (["61FF"] * 300, "kept announcing"),
    ],
)
def test_protocol_violations(answers: list[str], match: str) -> None:
    with pytest.raises(e.ProtocolViolation, match=match):
        apdu.transmit(ScriptedCard(*answers), apdu.read_record(1))


def test_response_repr_hides_data() -> None:
    response = apdu.Response.parse(b"110105194912310021" + b"\x90\x00")
    assert "1101" not in repr(response)
    assert repr(response) == "Response(sw=9000, data_len=18)"
