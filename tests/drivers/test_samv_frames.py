"""SAM_V frame codec: the literal frames from protocols.md, round trips, and arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.idcard.frames import (
    HEADER_LEN,
    MAX_FRAME,
    PREAMBLE,
    CardData,
    Command,
    Reply,
    Request,
    Status,
    check_frame,
    decode_card_data,
    decode_reply,
    decode_request,
    decode_sam_id,
    encode_card_data,
    encode_reply,
    encode_request,
    encode_sam_id,
    frame_len,
)
from drivers.idcard.reply_shapes import ANSWERS, SUCCESS, reply_fits
from drivers.serialio import PreambleFramer

FIND_REQUEST = bytes.fromhex("AA AA AA 96 69 00 03 20 01 22")
FIND_OK = bytes.fromhex("AA AA AA 96 69 00 08 00 00 9F 00 00 00 00 97")
NO_CARD = bytes.fromhex("AA AA AA 96 69 00 04 00 00 80 84")
SELECT_OK = bytes.fromhex("AA AA AA 96 69 00 0C 00 00 90") + bytes(8) + b"\x9c"


def framer() -> PreambleFramer:
    return PreambleFramer(
        PREAMBLE, header_len=HEADER_LEN, frame_len=frame_len, max_frame=MAX_FRAME, check=check_frame
    )


def test_find_request_matches_the_documented_frame() -> None:
    assert encode_request(Request.of(Command.FIND_CARD)) == FIND_REQUEST
    assert decode_request(FIND_REQUEST) == Request(0x20, 0x01)
    assert decode_request(FIND_REQUEST).command is Command.FIND_CARD


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        (FIND_OK, Reply(0, 0, Status.FIND_OK, bytes(4))),
        (NO_CARD, Reply(0, 0, Status.NO_CARD)),
        (SELECT_OK, Reply(0, 0, Status.OK, bytes(8))),
    ],
)
def test_documented_replies_decode_and_encode(frame: bytes, reply: Reply) -> None:
    assert decode_reply(frame) == reply
    assert encode_reply(reply) == frame


@pytest.mark.parametrize("command", list(Command))
def test_every_command_round_trips(command: Command) -> None:
    frame = encode_request(Request.of(command))
    assert len(frame) == 10
    assert decode_request(frame).command is command


@pytest.mark.parametrize("status", list(Status))
def test_every_status_reply_round_trips(status: Status) -> None:
    reply = Reply(0, 0, status, b"\x01\x02" if status == Status.OK else b"")
    assert decode_reply(encode_reply(reply)) == reply


def test_text_photo_reply_has_the_documented_size() -> None:
    data = encode_card_data(CardData(bytes(256), bytes(1024)))
    frame = encode_reply(Reply(0, 0, Status.OK, data))
    assert len(frame) == 1295
    assert frame[5:7] == b"\x05\x08"
    assert frame[10:14] == b"\x01\x00\x04\x00"
    assert decode_card_data(decode_reply(frame).data, fingerprint=False) == CardData(bytes(256), bytes(1024))


def test_fingerprint_reply_carries_a_third_length() -> None:
    card = CardData(bytes(256), bytes(1024), b"\x07" * 1024)
    data = encode_card_data(card)
    assert data[:6] == b"\x01\x00\x04\x00\x04\x00"
    assert decode_card_data(data, fingerprint=True) == card
    with pytest.raises(FrameError):
        decode_card_data(data, fingerprint=False)


def test_sam_id_round_trips() -> None:
    assert decode_sam_id(encode_sam_id((5, 1, 20230101, 12345, 987654321))) == (
        "05.01-20230101-0000012345-0987654321"
    )


def test_bad_checksum_and_bad_length_are_frame_errors() -> None:
    with pytest.raises(FrameError, match="checksum"):
        decode_reply(NO_CARD[:-1] + b"\x00")
    with pytest.raises(FrameError, match="length"):
        decode_reply(NO_CARD + b"\x00")


def test_card_data_repr_hides_contents() -> None:
    assert "bytes" in repr(CardData(b"secret-text", b"photo"))
    assert "secret" not in repr(CardData(b"secret-text", b"photo"))


@given(
    cmd=st.integers(0, 255),
    para=st.integers(0, 255),
    data=st.binary(max_size=MAX_FRAME - HEADER_LEN - 3),
)
def test_request_round_trip_property(cmd: int, para: int, data: bytes) -> None:
    request = Request(cmd, para, data)
    assert decode_request(encode_request(request)) == request


@given(
    sw=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    data=st.binary(max_size=MAX_FRAME - HEADER_LEN - 4),
)
def test_reply_round_trip_property(sw: tuple[int, int, int], data: bytes) -> None:
    reply = Reply(*sw, data)
    frame = encode_reply(reply)
    assert decode_reply(frame) == reply
    frames, rejected = framer().feed(frame)
    assert (frames, rejected) == ([frame], 0)


@given(st.binary(max_size=600))
def test_decoder_raises_only_frame_error_on_arbitrary_bytes(blob: bytes) -> None:
    for candidate in (blob, PREAMBLE + blob):
        try:
            decode_reply(candidate)
            decode_request(candidate)
        except FrameError:
            pass


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_framer_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    f = framer()
    for chunk in chunks:
        frames, _ = f.feed(PREAMBLE[:3] + chunk)
        assert f.pending <= MAX_FRAME
        for frame in frames:
            assert check_frame(frame)


@given(garbage=st.binary(max_size=40), split=st.integers(1, 30))
def test_framer_finds_frames_through_garbage_and_splits(garbage: bytes, split: int) -> None:
    # A full false preamble with a plausible length is resolved by the driver's timeout reset.
    assume(PREAMBLE not in garbage)
    f = framer()
    stream = garbage + FIND_OK + garbage.replace(b"\xaa", b"\x00") + SELECT_OK
    out: list[bytes] = []
    for i in range(0, len(stream), split):
        frames, _ = f.feed(stream[i : i + split])
        out += frames
    assert out[-2:] == [FIND_OK, SELECT_OK]


# The successful answer each command gets (data as protocols.md gives it), to tell late replies apart.
TYPICAL_OK = {
    Command.RESET_SAM: Reply(0, 0, Status.OK),
    Command.STATUS: Reply(0, 0, Status.OK),
    Command.SAM_ID: Reply(0, 0, Status.OK, encode_sam_id((5, 1, 20230101, 12345, 987654321))),
    Command.FIND_CARD: Reply(0, 0, Status.FIND_OK, bytes(4)),
    Command.SELECT_CARD: Reply(0, 0, Status.OK, bytes(8)),
    Command.READ_NEW_ADDRESS: Reply(0, 0, Status.OK, "新地址".ljust(35).encode("utf-16-le")),
    Command.READ_TEXT_PHOTO: Reply(0, 0, Status.OK, encode_card_data(CardData(bytes(256), bytes(1024)))),
    Command.READ_WITH_FINGERPRINT: Reply(
        0, 0, Status.OK, encode_card_data(CardData(bytes(256), bytes(1024), bytes(1024)))
    ),
}
# Which commands each successful answer can pass for. What matters most: card data fits only the
# reads, and nothing else fits a read or a find. Looser elsewhere so readers that leave out the
# select's 8 bytes or answer an absent address with a bare OK keep working.
BARE_OK = {Command.RESET_SAM, Command.STATUS, Command.SELECT_CARD, Command.READ_NEW_ADDRESS}
READS = {Command.READ_TEXT_PHOTO, Command.READ_WITH_FINGERPRINT}
FITS = {
    Command.RESET_SAM: BARE_OK,
    Command.STATUS: BARE_OK,
    Command.SAM_ID: {Command.SAM_ID, Command.READ_NEW_ADDRESS},
    Command.FIND_CARD: {Command.FIND_CARD},
    Command.SELECT_CARD: {Command.SELECT_CARD, Command.READ_NEW_ADDRESS},
    Command.READ_NEW_ADDRESS: {Command.READ_NEW_ADDRESS},
    Command.READ_TEXT_PHOTO: READS,
    Command.READ_WITH_FINGERPRINT: READS,
}


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.name)
def test_a_successful_reply_fits_only_commands_of_its_shape(command: Command) -> None:
    reply = TYPICAL_OK[command]
    assert {other for other in Command if reply_fits(other, reply)} == FITS[command]


@pytest.mark.parametrize("status", [Status.NO_CARD, Status.SELECT_FAILED, Status.READ_FAILED, 0x5A])
def test_an_error_status_without_data_fits_any_command(status: int) -> None:
    assert all(reply_fits(command, Reply(0, 0, status)) for command in Command)
    assert not any(reply_fits(command, Reply(0, 0, status, b"x")) for command in Command)


def test_no_new_address_fits_only_the_address_read() -> None:
    reply = Reply(0, 0, Status.NO_CONTENT)
    assert {c for c in Command if reply_fits(c, reply)} == {Command.READ_NEW_ADDRESS}


def test_the_reply_table_names_every_command_and_its_success_statuses() -> None:
    assert set(ANSWERS) == set(Command)
    assert {Status.OK, Status.FIND_OK, Status.NO_CONTENT} == SUCCESS
