"""Which characters a printer's built-in font can print: GB 2312, GBK or GB 18030 coverage. Pure.

Chinese receipt printers print text sent in their code page with a built-in font that covers
GB 2312 (6763 hanzi) or GBK (21886 characters); a character outside it comes out as a wrong
glyph or "?" with no error. Rare characters in personal names (e.g. U+4DAE 䶮, CJK Extension A,
or U+20BB7 𠮷, Extension B) are outside GBK. A GB 18030 font adds the four-byte range, but
printers ship only the mandatory GB 18030 repertoire (one- and two-byte codes plus Extension A),
so Extension B and beyond count as unprintable there too.
"""

from __future__ import annotations

from typing import Literal

FontCharset = Literal["gb2312", "gbk", "gb18030"]

_EXT_A = range(0x3400, 0x4DC0)

# TrueType fonts for lines drawn as raster images, from Debian packages: fonts-wqy-microhei
# (required) covers GBK and more; fonts-hanazono's HanaMinA / HanaMinB add Extension A and B.
WQY_MICROHEI = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
RASTER_FONTS: tuple[str, ...] = (
    WQY_MICROHEI,
    "/usr/share/fonts/truetype/hanazono/HanaMinA.ttf",
    "/usr/share/fonts/truetype/hanazono/HanaMinB.ttf",
)


def printable(char: str, charset: FontCharset) -> bool:
    """True when the printer's `charset` font prints `char` as itself."""
    if char.isascii():
        return 0x20 <= ord(char) < 0x7F
    try:
        encoded = char.encode(charset)
    except UnicodeEncodeError:
        return False
    if len(encoded) == 2:
        # GBK's user-defined areas (AAA1-AFFE, F8A1-FEFE, A140-A7A0) hold no glyphs in a stock font.
        lead, trail = encoded
        if trail >= 0xA1 and (0xAA <= lead <= 0xAF or lead >= 0xF8):
            return charset == "gb18030" and ord(char) in _EXT_A
        return not (0xA1 <= lead <= 0xA7 and trail < 0xA1)
    # Four-byte GB 18030: only Extension A is in the repertoire printers carry.
    return charset == "gb18030" and ord(char) in _EXT_A


def unprintable(text: str, charset: FontCharset) -> list[str]:
    """The distinct characters of `text` the printer font cannot print, in order of appearance."""
    seen: dict[str, None] = {}
    for char in text:
        if char not in seen and not printable(char, charset):
            seen[char] = None
    return list(seen)
