"""The receipt view decodes what the real driver encodes, and published ESC/POS bytes."""

from __future__ import annotations

from drivers.printer.job import Align, Line, PrintJob, encode_job
from gateway.api.receipt_view import decode_receipt


def test_the_drivers_job_reads_back_line_by_line() -> None:
    job = PrintJob(
        lines=(
            Line("社区服务中心", bold=True, double=True, align=Align.CENTER),
            Line("Pension request"),
            Line("No. 42", align=Align.RIGHT),
        ),
        qr="https://example.invalid/r/42",
        cut=True,
    )
    receipt = decode_receipt(encode_job(job))
    texts = [line["text"] for line in receipt.lines if line["text"]]
    assert texts == ["社区服务中心", "Pension request", "No. 42"]
    first = receipt.lines[0]
    assert first["bold"] and first["double"] and first["align"] == "center"
    assert next(line for line in receipt.lines if line["text"] == "No. 42")["align"] == "right"
    assert receipt.qr == "https://example.invalid/r/42"
    assert receipt.cut


def test_published_command_bytes() -> None:
    # ESC @, ESC a 1 (centre), ESC E 1 (bold), text, LF, ESC E 0, GS V 0 (full cut): the values
    # Odoo's hw_escpos constants and Epson's reference give for these commands.
    job = b"\x1b\x40\x1b\x61\x01\x1b\x45\x01TOTAL\n\x1b\x45\x00plain\n\x1d\x56\x00"
    receipt = decode_receipt(job)
    assert receipt.lines == [
        {"text": "TOTAL", "bold": True, "double": False, "align": "center"},
        {"text": "plain", "bold": False, "double": False, "align": "center"},
    ]
    assert receipt.cut and receipt.qr is None
    # Truncated commands and junk never raise.
    for cut_short in (b"\x1b", b"\x1d\x28\x6b\xff\xff", b"\x1d\x56", bytes(range(256))):
        decode_receipt(cut_short)
