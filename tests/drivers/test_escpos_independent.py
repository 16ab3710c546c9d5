"""Job bytes against an independent encoder, python-escpos's Dummy printer, and raster lines.

python-escpos (escpos/escpos.py, escpos/constants.py) is one source for every command here;
the second is named beside each: protocols.md's byte table (checked against Epson's ESC/POS
reference), escpos-php's Printer constants, react-thermal-printer's image command.
python-escpos has no GB18030 text path, so Chinese text bytes go through its `_raw` and the
Chinese-mode bytes (`FS &` / `FS .`) come from protocols.md.
"""

from __future__ import annotations

import escpos.constants as epc
import pytest
from escpos.printer import Dummy
from PIL import Image, ImageOps

from drivers.printer import Align, Line, PrintJob
from drivers.printer.charset import printable, unprintable
from drivers.printer.errors import InvalidJob, RasterFontMissing
from drivers.printer.frames import (
    CUT_FULL,
    CUT_PARTIAL,
    FEED_AND_FULL_CUT,
    FEED_AND_PARTIAL_CUT,
    QrErrorCorrection,
    RasterImage,
    decode_raster,
    qr_code,
)
from drivers.printer.job import PrinterProfile, encode, encode_job
from drivers.printer.raster import CELL_DOTS, LineRenderer

RARE = "刘䶮"  # U+4DAE, CJK Extension A: not in GBK
RARER = "𠮷田"  # U+20BB7, CJK Extension B: not in GB18030's two-byte range either


def dummy() -> Dummy:
    """python-escpos's byte-collecting printer, text passed through without code-page switching."""
    return Dummy(magic_encode_args={"disabled": True, "encoding": "CP437"})


def test_styled_ascii_text_matches_python_escpos() -> None:
    job = PrintJob(
        (
            Line("RECEIPT", bold=True, double=True, align=Align.CENTER),
            Line("Total 12.30"),
        )
    )
    p = dummy()
    p.hw("INIT")
    p.set(align="center")
    p.set(bold=True)
    p.set(custom_size=True, width=2, height=2)
    p.textln("RECEIPT")
    p.set(align="left")
    p.set(bold=False)
    p.set(custom_size=True, width=1, height=1)
    p.textln("Total 12.30")
    p.cut()  # feeds 6 lines, then GS V 0
    assert encode_job(job) == p.output


def test_chinese_text_between_fs_and_fs_dot() -> None:
    job = PrintJob((Line("收据"), Line("No. 7")), cut=False, feed_lines=0)
    p = dummy()
    p.hw("INIT")
    p._raw(b"\x1c\x26" + "收据".encode("gb18030"))
    p.ln()
    p._raw(b"\x1c\x2e")
    p.textln("No. 7")
    assert encode_job(job) == p.output


@pytest.mark.parametrize(("cut", "mode"), [("full", "FULL"), ("partial", "PART")])
def test_both_cuts_match_python_escpos(cut: str, mode: str) -> None:
    job = PrintJob((Line("x"),))
    p = dummy()
    p.hw("INIT")
    p.textln("x")
    p.cut(mode=mode)
    encoded = encode_job(job, PrinterProfile(cut="full" if cut == "full" else "partial"))
    assert encoded == p.output
    assert encoded.endswith(CUT_FULL if cut == "full" else CUT_PARTIAL)


def test_cut_constants_against_two_sources() -> None:
    assert CUT_FULL == epc.PAPER_FULL_CUT == b"\x1d\x56\x00"
    assert CUT_PARTIAL == epc.PAPER_PART_CUT == b"\x1d\x56\x01"
    # Function B: python-escpos's cut(feed=False) sends GS V 66 0, escpos-php's CUT_PARTIAL is 66
    # and CUT_FULL 65 (Printer::cut writes GS V mode lines).
    p = dummy()
    p.cut(feed=False)
    assert p.output == FEED_AND_PARTIAL_CUT == bytes([0x1D, 0x56, 66, 0])
    assert bytes([0x1D, 0x56, 65, 0]) == FEED_AND_FULL_CUT


@pytest.mark.parametrize(
    ("ec", "level"),
    [
        (QrErrorCorrection.L, epc.QR_ECLEVEL_L),
        (QrErrorCorrection.M, epc.QR_ECLEVEL_M),
        (QrErrorCorrection.H, epc.QR_ECLEVEL_H),
    ],
)
def test_qr_matches_python_escpos(ec: QrErrorCorrection, level: int) -> None:
    data = "https://example.invalid/r/0042"
    p = dummy()
    p.qr(data, ec=level, size=6, native=True)
    assert qr_code(data.encode(), module_size=6, ec=ec) == p.output
    job = encode_job(PrintJob((Line("a"),), qr=data, qr_ec=ec))
    assert p.output in job


def test_a_line_outside_gbk_becomes_a_raster_row_of_the_right_size() -> None:
    profile = PrinterProfile(width_dots=576)
    encoded = encode(PrintJob((Line("Name:"), Line(RARE), Line("ok"))), profile)
    assert encoded.raster_lines == 1 and encoded.replaced_chars == 0
    data = encoded.data
    start = data.index(b"\x1d\x76\x30")
    header = data[start : start + 8]
    # m = 0; two 24-dot characters, left-aligned: xL xH = 48 / 8 = 6 bytes per row,
    # yL yH = 24 rows (the printer's own CJK cell); k = 6 x 24.
    assert header == bytes.fromhex("1D 76 30 00 06 00 18 00")
    image = decode_raster(data[start : start + 8 + 6 * 24])
    assert (image.width_bytes, image.height) == (6, CELL_DOTS)
    assert data[start + 8 + 6 * 24 :].startswith(b"ok\n")
    # Nothing of the rare line went out as text.
    assert "刘".encode("gb18030") not in data
    # Ink in both 24-dot cells (the two characters).
    assert any(image.dot(x, y) for x in range(0, 24) for y in range(24))
    assert any(image.dot(x, y) for x in range(24, 48) for y in range(24))


def test_centred_raster_line_spans_the_paper() -> None:
    encoded = encode(PrintJob((Line(RARE, align=Align.CENTER),)), PrinterProfile(width_dots=576))
    start = encoded.data.index(b"\x1d\x76\x30")
    image = decode_raster(encoded.data[start : start + 8 + 72 * 24])
    assert (image.width_bytes, image.height) == (72, 24)
    inked = [x for x in range(576) if any(image.dot(x, y) for y in range(24))]
    assert min(inked) >= 288 - 48 and max(inked) < 288 + 48  # around the middle


def test_raster_after_a_centred_text_line_resets_justification() -> None:
    data = encode_job(PrintJob((Line("TITLE", align=Align.CENTER), Line(RARE)), cut=False, feed_lines=0))
    assert data.startswith(b"\x1b\x40\x1b\x61\x01TITLE\n\x1b\x61\x00\x1d\x76\x30\x00\x06\x00\x18\x00")


def test_raster_bytes_match_python_escpos_image() -> None:
    row = LineRenderer(width_dots=384).render(RARE + RARER)[0]
    assert row.missing == 0
    width = row.image.width_bytes * 8
    # Rebuild the picture black on white and let python-escpos encode it with GS v 0.
    picture = ImageOps.invert(Image.frombytes("1", (width, row.image.height), row.image.data).convert("L"))
    p = dummy()
    p.image(picture, impl="bitImageRaster")
    assert p.output == row.image.command()
    assert p.output[:8] == bytes.fromhex("1D 76 30 00 0C 00 18 00")  # 4 characters: 96 dots


def test_double_bold_and_wrapping_rows() -> None:
    renderer = LineRenderer(width_dots=384)
    double = renderer.render(RARE, double=True, bold=True)
    # 2 characters of 48 dots, plus the bold stroke's extra dot: 97 dots in 13 bytes.
    assert [(r.image.width_bytes, r.image.height) for r in double] == [(13, 48)]
    long_rows = renderer.render(RARE * 20)  # 40 cells of 24 dots on 384 dots: 16 per row
    assert [(r.image.width_bytes, r.image.height) for r in long_rows] == [(48, 24), (48, 24), (24, 24)]
    right = renderer.render(RARE, align=2)[0].image
    assert not any(right.dot(x, y) for x in range(0, 300) for y in range(24))


def test_character_no_font_has_is_drawn_as_the_placeholder_and_counted() -> None:
    encoded = encode(PrintJob((Line("刘\U0010fffd"),)))
    assert encoded.raster_lines == 1 and encoded.replaced_chars == 1


def test_placeholder_mode_replaces_only_the_unprintable_characters() -> None:
    profile = PrinterProfile(unprintable="placeholder", placeholder="□")
    encoded = encode(PrintJob((Line(RARE + " " + RARER),), cut=False, feed_lines=0), profile)
    assert encoded.data == b"\x1b\x40\x1c\x26" + "刘□ □田".encode("gbk") + b"\n\x1c\x2e"
    assert encoded.replaced_chars == 2 and encoded.raster_lines == 0
    assert b"\x1d\x76\x30" not in encoded.data


def test_charset_decides_what_is_unprintable() -> None:
    assert unprintable("张三 堃 䶮 𠮷", "gb2312") == ["堃", "䶮", "𠮷"]
    assert unprintable("张三 堃 䶮 𠮷", "gbk") == ["䶮", "𠮷"]
    assert unprintable("张三 堃 䶮 𠮷", "gb18030") == ["𠮷"]
    assert printable("□", "gb2312") and not printable("\x7f", "gbk")
    gb18030 = encode(PrintJob((Line(RARE),), cut=False, feed_lines=0), PrinterProfile(charset="gb18030"))
    assert gb18030.data == b"\x1b\x40\x1c\x26" + RARE.encode("gb18030") + b"\n\x1c\x2e"


def test_missing_font_is_a_clear_error() -> None:
    profile = PrinterProfile(raster_fonts=("/nonexistent/wqy-microhei.ttc",))
    assert encode_job(PrintJob((Line("fine"),)), profile)  # no rare character: no font needed
    with pytest.raises(RasterFontMissing, match="apt-get install -y fonts-wqy-microhei"):
        encode_job(PrintJob((Line(RARE),)), profile)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cut": "half"},
        {"unprintable": "drop"},
        {"placeholder": ""},
        {"placeholder": "䶮"},
        {"width_dots": 570},
        {"width_dots": 0},
    ],
)
def test_bad_profiles_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PrinterProfile(**kwargs)  # type: ignore[arg-type]


def test_control_characters_still_refused_on_raster_lines() -> None:
    with pytest.raises(InvalidJob):
        encode_job(PrintJob((Line(RARE + "\x1b@"),)))


def test_raster_image_checks_its_size() -> None:
    with pytest.raises(ValueError):
        RasterImage(2, 2, b"\x00" * 3)
    with pytest.raises(ValueError):
        decode_raster(bytes.fromhex("1D 76 30 00 02 00 02 00") + b"\x00")
