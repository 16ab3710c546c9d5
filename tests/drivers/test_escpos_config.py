"""The printer's config keys: defaults, what they build, and the values refused with a clear error."""

from __future__ import annotations

import msgspec
import pytest

from gateway.config import EscposDevice


def parse(**keys: object) -> EscposDevice:
    return msgspec.convert({"driver": "escpos", "port": "sim://printer", **keys}, EscposDevice)


def test_defaults_are_full_cut_gbk_raster() -> None:
    cfg = parse()
    assert (cfg.cut, cfg.font_charset, cfg.unprintable, cfg.placeholder) == ("full", "gbk", "raster", "□")
    assert cfg.paper_width_dots == 576
    assert cfg.raster_fonts[0] == "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"


def test_partial_cut_and_placeholder_are_accepted() -> None:
    cfg = parse(cut="partial", unprintable="placeholder", placeholder="?", paper_width_dots=384)
    assert (cfg.cut, cfg.unprintable, cfg.placeholder, cfg.paper_width_dots) == (
        "partial",
        "placeholder",
        "?",
        384,
    )


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({"cut": "half"}, "cut"),
        ({"font_charset": "big5"}, "font_charset"),
        ({"unprintable": "drop"}, "unprintable"),
        ({"placeholder": "䶮"}, "not printable in gbk"),
        ({"placeholder": "□", "font_charset": "gb2312"}, None),
        ({"placeholder": ""}, "placeholder"),
        ({"paper_width_dots": 570}, "multiple of 8"),
        ({"raster_fonts": []}, "raster_fonts"),
    ],
)
def test_bad_values_are_refused(keys: dict[str, object], match: str | None) -> None:
    if match is None:
        parse(**keys)
        return
    with pytest.raises(msgspec.ValidationError, match=match):
        parse(**keys)
