"""The pure APDU layer: command bytes, the 61xx / 6Cxx dance, T=0 case 4, status words as errors.

Command bytes and exchanges are the published bytes of independent sources (apdu.py names them):
OpenSC src/libopensc/iso7816.c + apdu.c, openemv/emv-utils tests/emv_ttl_tpdu_test.c and
tests/emv_build_candidate_list_test.c, a7082633/HDOS_VC6 新疆焦阳/HD_XJDLL/HD_XJDLL.cpp,
yxsylyh/hiquotion_cpp Hardware/card/SIDCard/DeCard/SIDCardOperation.cpp.
"""

from __future__ import annotations

import pytest

from drivers.base import DeviceRejected
from drivers.cardreader import apdu
from drivers.cardreader import errors as e

FAIL = "transaction failed"


class ScriptedCard:
    """A transmit function answering from a script and recording what was sent.

    The answer FAIL stands for the reader failing the exchange ("transaction failed", card present).
    """

    def __init__(self, *answers: str) -> None:
        self.answers = [a if a == FAIL else bytes.fromhex(a) for a in answers]
        self.sent: list[str] = []

    def __call__(self, command: bytes) -> bytes:
        self.sent.append(command.hex().upper())
        answer = self.answers.pop(0)
        if isinstance(answer, str):
            raise e.TransactionFailed("transaction failed", device="cr")
        return answer


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


@pytest.mark.parametrize(
    ("built", "published", "source"),
    [
        (apdu.read_record(0x08, apdu.P2_BY_IDENTIFIER, le=0x14), "00B2080014", "HD_XJDLL.cpp SSN"),
        (apdu.read_record(0x09, apdu.P2_BY_IDENTIFIER, le=0x20), "00B2090020", "HD_XJDLL.cpp name"),
        (apdu.read_record(0x01, apdu.P2_BY_IDENTIFIER, le=0x12), "00B2010012", "SIDCardOperation card id"),
        (apdu.read_record(0x01, apdu.P2_BY_POSITION), "00B2010400", "Z390Kylin EF06 position 1"),
        (apdu.read_record(0x02, apdu.P2_BY_POSITION), "00B2020400", "Z390Kylin EF06 position 2"),
        (apdu.read_record_sfi(5, 7, le=0x0B), "00B2072C0B", "HD_XJDLL.cpp card number, short EF 5"),
        (apdu.read_record_sfi(1, 1), "00B2010C00", "emv-utils READ RECORD 1,1"),
        (apdu.select_aid(apdu.PSE_AID), "00A404000E315041592E5359532E444446303100", "emv-utils PSE"),
        (apdu.select_ef(b"\xef\x06"), "00A4020002EF06", "HD_XJDLL.cpp select EF06"),
        (apdu.select_ef(b"\xef\x05", p1=0x00), "00A4000002EF05", "Z390Kylin select EF05"),
    ],
)
def test_commands_match_published_bytes(built: bytes, published: str, source: str) -> None:
    assert built.hex().upper() == published, source


def test_read_record_refuses_other_p2_modes() -> None:
    with pytest.raises(ValueError, match="P2"):
        apdu.read_record(1, 0x02)  # "next record": not an addressing the driver uses
    with pytest.raises(ValueError, match="short EF"):
        apdu.read_record_sfi(31, 1)


def test_case_detection_and_t0_shaping() -> None:
    select = apdu.select_aid(apdu.SSC_AID)
    assert [
        apdu.case_of(c)
        for c in (b"\x00\x84\x00\x00", apdu.read_record(1), apdu.select_ef(b"\xef\x05"), select)
    ] == [1, 2, 3, 4]
    # The vendor samples' SELECT of the social security application, as T=0 sends it (no Le).
    assert apdu.for_protocol(select, t0=True).hex().upper() == "00A404000F7378312E73682EC9E7BBE1B1A3D5CF"
    assert apdu.for_protocol(select, t0=False) == select
    for other in (apdu.read_record(1), apdu.select_ef(b"\xef\x05")):
        assert apdu.for_protocol(other, t0=True) == other
    with pytest.raises(ValueError, match="case 4"):
        apdu.without_le(apdu.read_record(1))


# emv-utils tests/emv_ttl_tpdu_test.c "case 4 normal processing": SELECT PSE over T=0.
EMV_UTILS_PSE_FCI_T0 = "6F24840E315041592E5359532E4444463031A5128801015F2D08656E6573667264659F110101"


def test_t0_select_goes_without_le_and_fetches_with_get_response() -> None:
    card = ScriptedCard("6126", EMV_UTILS_PSE_FCI_T0 + "9000")
    data = apdu.transmit(card, apdu.select_aid(apdu.PSE_AID), t0=True)
    assert data.hex().upper() == EMV_UTILS_PSE_FCI_T0
    assert card.sent == ["00A404000E315041592E5359532E4444463031", "00C0000026"]


def test_6c_resend_as_published() -> None:
    # emv-utils "case 2 normal processing": 6C 1C, then the same READ RECORD with Le 1C.
    record = "701A61184F07A0000000031010500A56495341204445424954870101"
    card = ScriptedCard("6C1C", record + "9000")
    assert apdu.transmit(card, apdu.read_record_sfi(1, 1)).hex().upper() == record
    assert card.sent == ["00B2010C00", "00B2010C1C"]


def test_transaction_failed_case4_is_retried_without_le() -> None:
    card = ScriptedCard(FAIL, "6112", "6F108408" + "AA" * 8 + "A50401020304" + "9000")
    data = apdu.transmit(card, apdu.select_aid(apdu.SSC_AID))
    assert len(data) == 18
    assert card.sent == [
        "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00",
        "00A404000F7378312E73682EC9E7BBE1B1A3D5CF",
        "00C0000012",
    ]


def test_transaction_failed_elsewhere_is_not_retried() -> None:
    card = ScriptedCard(FAIL)
    with pytest.raises(e.TransactionFailed):
        apdu.transmit(card, apdu.read_record(1))
    card = ScriptedCard(FAIL, FAIL)
    with pytest.raises(e.TransactionFailed):
        apdu.transmit(card, apdu.select_aid(apdu.SSC_AID))
    assert len(card.sent) == 2


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


def test_end_of_record_warning_still_delivers_the_record() -> None:
    record = "0812" + b"11010519491231002X".hex().upper()
    assert apdu.transmit(ScriptedCard(record + "6282"), apdu.read_record(1)).hex().upper() == record
    with pytest.raises(e.ApduError) as info:
        apdu.transmit(ScriptedCard("6282"), apdu.read_record(1))  # a warning without data
    assert info.value.sw == 0x6282
    with pytest.raises(e.ApduError):
        apdu.transmit(ScriptedCard("6F006282"), apdu.select_ef(b"\xef\x05"))  # only for reads


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
