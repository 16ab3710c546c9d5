"""ESC/POS bytes: job encoding, real-time status bits, and sorting answers from pushed status."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.printer import InvalidJob, Line, PrinterStatus, PrintJob, encode_job
from drivers.printer.frames import (
    FlowControl,
    ProcessIdAnswer,
    RealtimeAnswer,
    StatusPush,
    StatusSorter,
    Unknown,
    process_id_request,
    process_id_response,
    qr_code,
    realtime_status,
)

QR_MODEL_2 = bytes.fromhex("1D 28 6B 04 00 31 41 32 00")
QR_PRINT = bytes.fromhex("1D 28 6B 03 00 31 51 30")


def test_realtime_status_commands() -> None:
    assert [realtime_status(n) for n in (1, 2, 3, 4)] == [
        b"\x10\x04\x01",
        b"\x10\x04\x02",
        b"\x10\x04\x03",
        b"\x10\x04\x04",
    ]
    with pytest.raises(ValueError):
        realtime_status(5)


def test_qr_code_bytes_follow_the_documented_layout() -> None:
    data = b"https://example.invalid/x"
    qr = qr_code(data, module_size=6)
    store = b"\x1d\x28\x6b" + bytes([len(data) + 3, 0]) + b"\x31\x50\x30" + data
    assert qr == (
        QR_MODEL_2
        + bytes.fromhex("1D 28 6B 03 00 31 43 06")
        + bytes.fromhex("1D 28 6B 03 00 31 45 31")
        + store
        + QR_PRINT
    )


def test_job_with_chinese_text_and_qr() -> None:
    job = PrintJob(
        (Line("收据", bold=True, double=True), Line("Total 12.30"), Line("谢谢")),
        qr="q1",
    )
    expected = (
        b"\x1b\x40"
        + b"\x1b\x45\x01\x1d\x21\x11\x1c\x26"
        + "收据".encode("gb18030")
        + b"\n"
        + b"\x1b\x45\x00\x1d\x21\x00\x1c\x2e"
        + b"Total 12.30\n"
        + b"\x1c\x26"
        + "谢谢".encode("gb18030")
        + b"\n\x1c\x2e"
        + b"\x1b\x61\x01"
        + qr_code(b"q1")
        + b"\n\x1b\x61\x00"
        + b"\x1b\x64\x06"
        + b"\x1d\x56\x00"  # full cut by default (protocols.md, corrected: 1D 56 42 is partial)
    )
    assert encode_job(job) == expected


def test_job_without_cut_or_feed() -> None:
    job = PrintJob((Line("a"),), feed_lines=0, cut=False)
    assert encode_job(job) == b"\x1b\x40a\n"


@pytest.mark.parametrize("text", ["a\x1b@b", "x\x10\x04\x01", "tab\there", "z" * 300])
def test_control_characters_and_long_lines_are_refused(text: str) -> None:
    with pytest.raises(InvalidJob):
        encode_job(PrintJob.of([text]))


def test_job_repr_hides_text() -> None:
    job = PrintJob.of(["张三 110105194912310021"], qr="secret")
    assert "张三" not in repr(job) and "secret" not in repr(job)


def test_realtime_bits_from_protocols_md() -> None:
    idle = PrinterStatus.from_realtime({1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12})
    assert idle.ready and idle.warnings == ()
    assert PrinterStatus.from_realtime({1: 0x1A}).offline
    assert PrinterStatus.from_realtime({2: 0x16}).cover_open
    assert PrinterStatus.from_realtime({2: 0x32}).out_of_paper
    assert PrinterStatus.from_realtime({3: 0x1A}).hardware_fault == "cutter error"
    assert PrinterStatus.from_realtime({3: 0x32}).hardware_fault == "unrecoverable error"
    assert PrinterStatus.from_realtime({3: 0x52}).auto_recoverable
    near = PrinterStatus.from_realtime({4: 0x1E})
    assert near.ready and near.warnings == ("paper_near_end",)
    assert PrinterStatus.from_realtime({4: 0x72}).user_fault == "paper end"


statuses = st.builds(
    lambda cover, cutter, unrec, auto, near, end: PrinterStatus(
        offline=cover or end or cutter or unrec or auto,
        cover_open=cover,
        paper_end_stop=end,
        error=cutter or unrec or auto,
        cutter_error=cutter,
        unrecoverable=unrec,
        auto_recoverable=auto,
        paper_near_end=near or end,
        paper_end=end,
    ),
    *(st.booleans() for _ in range(6)),
)


@given(statuses)
def test_status_survives_both_encodings(status: PrinterStatus) -> None:
    answers = {n: status.realtime_answer(n) for n in (1, 2, 3, 4)}
    assert all(v & 0x93 == 0x12 for v in answers.values())
    assert PrinterStatus.from_realtime(answers) == status
    push = status.asb()
    assert push[0] & 0x93 == 0x10 and all(b & 0x90 == 0 for b in push[1:])
    assert PrinterStatus.from_asb(push) == status


def test_sorter_tells_answers_from_pushes_and_process_ids() -> None:
    cover = PrinterStatus(offline=True, cover_open=True)
    stream = b"\x12" + cover.asb() + b"\x16\x13" + process_id_response(b"0007") + b"\x12\x11\x1e" + b"\xff"
    items = StatusSorter().feed(stream)
    assert items == [
        RealtimeAnswer(0x12),
        StatusPush(cover.asb()),
        RealtimeAnswer(0x16),
        FlowControl(xoff=True),
        ProcessIdAnswer(b"0007"),
        RealtimeAnswer(0x12),
        FlowControl(xoff=False),
        RealtimeAnswer(0x1E),
        Unknown(b"\xff"),
    ]
    assert StatusPush(cover.asb()).status.cover_open


def test_sorter_handles_pushes_split_across_reads() -> None:
    sorter = StatusSorter()
    push = PrinterStatus(paper_near_end=True).asb()
    out = []
    for byte in b"\x12" + push + b"\x12":
        out += sorter.feed(bytes([byte]))
    assert out == [RealtimeAnswer(0x12), StatusPush(push), RealtimeAnswer(0x12)]


@given(st.binary(max_size=200))
def test_sorter_never_raises(blob: bytes) -> None:
    StatusSorter().feed(blob)


def test_process_id_request_bytes() -> None:
    assert process_id_request(b"0001") == bytes.fromhex("1D 28 48 06 00 30 30 30 30 30 31")
    with pytest.raises(ValueError):
        process_id_request(b"\x00\x01\x02\x03")
