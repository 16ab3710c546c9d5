"""What a V4L2 camera offers, from `ffmpeg -f v4l2 -list_formats all`, and which input to ask for. Pure.

ffmpeg (libavdevice/v4l2.c, list_formats) writes one line per VIDIOC_ENUM_FMT entry:
`Raw       : %11s : %20s :` or `Compressed: %11s : %20s :` (ffmpeg's pixel format or codec
name, "Unsupported" when it has none, then the driver's description), an optional
` Emulated :`, then the frame sizes, ` WxH` each or ` {min-max, step}x{min-max, step}` for a
stepwise range; ffmpeg before 2.x wrote `R :` / `C :`. The test fixtures are outputs quoted in
public sources (mpromonet/v4l2rtspserver issue 177; a V4L2 how-to on mras2an.webnode.fr; a
FaceTime HD driver guide for a YUYV-only camera with stepwise sizes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE = r"(?:\d+x\d+|\{\d+-\d+,\s*\d+\}x\{\d+-\d+,\s*\d+\})"
_LINE = re.compile(
    r"^(?:\[[^\]]*\]\s*)?(?P<kind>Raw|Compressed|R|C)\s*:\s*(?P<name>\S+)\s*:\s*(?P<desc>.*?)\s*:"
    rf"(?P<emulated>\s*Emulated\s*:)?(?P<sizes>(?:\s*{_SIZE})*)\s*$"
)
_DISCRETE = re.compile(r"(\d+)x(\d+)")
_STEPWISE = re.compile(r"\{(\d+)-(\d+),\s*(\d+)\}x\{(\d+)-(\d+),\s*(\d+)\}")

# Raw formats to prefer, in order, when there is no MJPEG: YUYV is what UVC cameras give.
_RAW_ORDER = ("yuyv422", "uyvy422", "nv12", "yuv420p", "rgb24", "bgr24", "gray")
_COMPRESSED_FALLBACK = ("h264",)


@dataclass(frozen=True, slots=True)
class SizeRange:
    """A stepwise size range (VIDIOC_ENUM_FRAMESIZES type STEPWISE or CONTINUOUS)."""

    min_w: int
    max_w: int
    step_w: int
    min_h: int
    max_h: int
    step_h: int

    def fits(self, width: int, height: int) -> bool:
        return (
            self.min_w <= width <= self.max_w
            and self.min_h <= height <= self.max_h
            and (width - self.min_w) % max(1, self.step_w) == 0
            and (height - self.min_h) % max(1, self.step_h) == 0
        )


@dataclass(frozen=True, slots=True)
class CameraFormat:
    """One format the camera offers, named as ffmpeg's `-input_format` takes it."""

    name: str
    compressed: bool
    description: str
    sizes: tuple[tuple[int, int], ...] = ()
    ranges: tuple[SizeRange, ...] = ()
    emulated: bool = False

    @property
    def usable(self) -> bool:
        return self.name != "Unsupported"

    def offers(self, width: int, height: int) -> bool:
        return (width, height) in self.sizes or any(r.fits(width, height) for r in self.ranges)

    def nearest(self, width: int, height: int) -> tuple[int, int] | None:
        """The offered size closest in area to the wanted one, not larger when a smaller exists."""
        if self.offers(width, height):
            return (width, height)
        candidates = list(self.sizes) + [(r.max_w, r.max_h) for r in self.ranges]
        if not candidates:
            return None
        want = width * height
        smaller = [s for s in candidates if s[0] * s[1] <= want]
        pool = smaller or candidates
        return min(pool, key=lambda s: (abs(want - s[0] * s[1]), -s[0]))


@dataclass(frozen=True, slots=True)
class InputChoice:
    """What to ask ffmpeg's v4l2 input for."""

    input_format: str
    size: tuple[int, int] | None
    compressed: bool


def parse_list_formats(output: str) -> list[CameraFormat]:
    """Every format line of `ffmpeg -f v4l2 -list_formats all -i DEV` (its stderr), in order."""
    found: list[CameraFormat] = []
    for raw_line in output.splitlines():
        match = _LINE.match(raw_line.strip())
        if match is None:
            continue
        sizes_text = match["sizes"]
        found.append(
            CameraFormat(
                name=match["name"],
                compressed=match["kind"] in ("Compressed", "C"),
                description=match["desc"],
                sizes=tuple(
                    dict.fromkeys(
                        (int(w), int(h)) for w, h in _DISCRETE.findall(_STEPWISE.sub("", sizes_text))
                    )
                ),
                ranges=tuple(SizeRange(*map(int, m)) for m in _STEPWISE.findall(sizes_text)),
                emulated=match["emulated"] is not None,
            )
        )
    return found


def choose_input(formats: list[CameraFormat], width: int, height: int) -> InputChoice | None:
    """MJPEG when offered; else a raw format ffmpeg reads (YUYV first); else H.264; else None."""
    usable = [f for f in formats if f.usable and not f.emulated] or [f for f in formats if f.usable]

    def pick(fmt: CameraFormat) -> InputChoice:
        return InputChoice(fmt.name, fmt.nearest(width, height), fmt.compressed)

    for fmt in usable:
        if fmt.compressed and fmt.name == "mjpeg":
            return pick(fmt)
    raw = [f for f in usable if not f.compressed]
    if raw:
        ranked = sorted(
            raw,
            key=lambda f: _RAW_ORDER.index(f.name) if f.name in _RAW_ORDER else len(_RAW_ORDER),
        )
        return pick(ranked[0])
    for fmt in usable:
        if fmt.name in _COMPRESSED_FALLBACK:
            return pick(fmt)
    return None
