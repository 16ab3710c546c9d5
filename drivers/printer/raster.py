"""Lines the printer font cannot print, drawn with a CJK TrueType font into GS v 0 raster rows.

The command's bytes (and their sources) are in frames.RasterImage.

Fonts come from Debian packages: fonts-wqy-microhei (GBK and more) first, then HanaMinA /
HanaMinB from fonts-hanazono for CJK Extension A and B. A character no font has is drawn as
the placeholder, and counted, so nothing is ever printed as a wrong glyph without a trace.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from drivers.printer.charset import RASTER_FONTS
from drivers.printer.errors import RasterFontMissing
from drivers.printer.frames import RasterImage

# The printers' own CJK font is 24 x 24 dots; raster rows use the same height.
CELL_DOTS = 24
_ABSENT = "\U0010fffd"  # a private-use code point no font maps: renders as the font's .notdef


@dataclass(frozen=True, slots=True)
class RasterRow:
    """One drawn row of a line and how many of its characters no font had (drawn as placeholder)."""

    image: RasterImage
    missing: int = 0


class _Font:
    def __init__(self, path: str, size: int) -> None:
        self.face = ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)
        self._notdef = self._mask(_ABSENT)

    def _mask(self, char: str) -> tuple[tuple[int, int], bytes]:
        mask = self.face.getmask(char, mode="1")
        return mask.size, bytes(mask)

    def has(self, char: str) -> bool:
        # Pillow has no cmap lookup: a character the font lacks renders exactly as .notdef.
        return char.isspace() or self._mask(char) != self._notdef


def resolve_fonts(paths: Sequence[str]) -> tuple[str, ...]:
    """The configured font files that exist; the first one is required (clear error if absent)."""
    if not paths:
        raise RasterFontMissing("no raster font configured")
    first = Path(paths[0])
    if not first.is_file():
        raise RasterFontMissing(
            f"raster font {first} not found: install it with `apt-get install -y fonts-wqy-microhei`"
            " (fonts-hanazono adds rare characters) or set raster_fonts"
        )
    return tuple(p for p in paths if Path(p).is_file())


@functools.lru_cache(maxsize=8)
def _fonts(paths: tuple[str, ...], size: int) -> tuple[_Font, ...]:
    return tuple(_Font(p, size) for p in paths)


class LineRenderer:
    """Draws text lines the printer cannot print into raster rows `width_dots` wide."""

    def __init__(self, font_paths: Sequence[str] = RASTER_FONTS, *, width_dots: int = 576) -> None:
        if width_dots <= 0 or width_dots % 8:
            raise ValueError("width_dots is a positive multiple of 8")
        self.font_paths = resolve_fonts(font_paths)
        self.width_dots = width_dots

    def render(
        self,
        text: str,
        *,
        double: bool = False,
        bold: bool = False,
        align: int = 0,
        placeholder: str = "□",
    ) -> list[RasterRow]:
        """`text` as raster rows of CELL_DOTS (48 when double) dots, wrapped at the paper width."""
        scale = 2 if double else 1
        height = CELL_DOTS * scale
        fonts = _fonts(self.font_paths, height)
        glyphs: list[tuple[str, _Font | None, float]] = []
        for char in text:
            font = next((f for f in fonts if f.has(char)), None)
            shown = char if font is not None else placeholder
            face = font if font is not None else next((f for f in fonts if f.has(placeholder)), fonts[0])
            glyphs.append((shown, font, face.face.getlength(shown)))
        rows: list[list[tuple[str, _Font | None, float]]] = [[]]
        used = 0.0
        for glyph in glyphs:
            if rows[-1] and used + glyph[2] > self.width_dots:
                rows.append([])
                used = 0.0
            rows[-1].append(glyph)
            used += glyph[2]
        return [self._draw(row, fonts, height, bold, align, placeholder) for row in rows]

    def _draw(
        self,
        row: list[tuple[str, _Font | None, float]],
        fonts: tuple[_Font, ...],
        height: int,
        bold: bool,
        align: int,
        placeholder: str,
    ) -> RasterRow:
        width = min(self.width_dots, math.ceil(sum(g[2] for g in row)) + (1 if bold else 0))
        x = float({0: 0, 1: (self.width_dots - width) // 2, 2: self.width_dots - width}.get(align, 0))
        # A left-aligned row is only as wide as its text: every byte costs wire time (a full
        # 576-dot row of 24 lines is 1728 bytes, 1.8 s at 9600 baud). Centred and right-aligned
        # rows span the paper, so the position never depends on the printer's ESC a handling.
        image_width = min(self.width_dots, max(8, -(-width // 8) * 8)) if align == 0 else self.width_dots
        image = Image.new("1", (image_width, height), 1)
        draw = ImageDraw.Draw(image)
        missing = 0
        for char, font, advance in row:
            face = font
            if face is None:
                missing += 1
                face = next((f for f in fonts if f.has(placeholder)), fonts[0])
            for dx in (0, 1) if bold else (0,):
                draw.text((x + dx, 0), char, font=face.face, fill=0)
            x += advance
        return RasterRow(RasterImage(image_width // 8, height, pack(image)), missing)


def pack(image: Image.Image) -> bytes:
    """A black-on-white image as raster bytes: MSB first, 1 = black dot, rows padded to bytes."""
    inverted = Image.eval(image.convert("L"), lambda v: 255 - v).convert("1", dither=Image.Dither.NONE)
    return inverted.tobytes()
