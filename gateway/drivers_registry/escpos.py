"""The ESC/POS receipt printer (`driver = "escpos"`): its config table and how the gateway builds it."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Annotated, Any, Literal

import msgspec

from gateway.drivers_registry.capabilities import PRINTER
from gateway.drivers_registry.entry import SIM_PREFIX, Built, started
from gateway.drivers_registry.serial import SerialOptions, serial_entry


class EscposDevice(SerialOptions, tag_field="driver", tag="escpos"):
    baudrate: Annotated[int, msgspec.Meta(ge=1200, le=921_600)] = 9_600
    status_back: bool = False
    # Confirm each job printed (GS ( H process id); turn off for printers that lack the command.
    confirm_print: bool = True
    # "xonxoff": the printer paces job data with XON/XOFF (set it to match the printer's DIP
    # switches or memory switch); "none": it does not.
    flow_control: Literal["none", "xonxoff"] = "none"
    # "full" or "partial": the cut after each receipt (GS V 0 / GS V 1, after a 6-line feed).
    cut: Literal["full", "partial"] = "full"
    # Characters the printer's built-in font has: "gb2312", "gbk" or "gb18030" (the mandatory
    # set: two-byte codes plus CJK Extension A).
    font_charset: Literal["gb2312", "gbk", "gb18030"] = "gbk"
    # A line with characters outside font_charset: "raster" draws it as an image (GS v 0) with
    # raster_fonts; "placeholder" prints `placeholder` in place of each such character.
    unprintable: Literal["raster", "placeholder"] = "raster"
    placeholder: Annotated[str, msgspec.Meta(min_length=1, max_length=4)] = "□"
    # Printable width in dots: 576 for 80 mm paper, 384 for 58 mm (203 dpi heads).
    paper_width_dots: Annotated[int, msgspec.Meta(ge=8, le=4096, multiple_of=8)] = 576
    # TrueType fonts for raster lines, tried in order per character; the first must exist.
    raster_fonts: list[str] = msgspec.field(
        default_factory=lambda: [
            "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
            "/usr/share/fonts/truetype/hanazono/HanaMinA.ttf",
            "/usr/share/fonts/truetype/hanazono/HanaMinB.ttf",
        ]
    )
    # Simulator only: seconds the simulated printer takes per job.
    sim_print_time_s: Annotated[float, msgspec.Meta(ge=0)] = 0.5

    def __post_init__(self) -> None:
        from drivers.printer.charset import printable

        if not all(printable(c, self.font_charset) for c in self.placeholder):
            raise ValueError(f"placeholder {self.placeholder!r} is not printable in {self.font_charset}")
        if self.unprintable == "raster" and not self.raster_fonts:
            raise ValueError("unprintable = 'raster' needs at least one of raster_fonts")


async def build(name: str, cfg: EscposDevice, stack: AsyncExitStack) -> Built:
    """The printer; a sim:// port starts the simulated printer first."""
    from drivers.printer.driver import EscPosPrinter
    from drivers.printer.job import PrinterProfile

    port = cfg.port
    simulator: Any = None
    if port.startswith(SIM_PREFIX):
        from drivers.printer.simulator import PrinterSimulator

        simulator = PrinterSimulator(name=name, baudrate=cfg.baudrate, print_time=cfg.sim_print_time_s)
        port = await started(simulator, stack)
    profile = PrinterProfile(
        cut=cfg.cut,
        charset=cfg.font_charset,
        unprintable=cfg.unprintable,
        placeholder=cfg.placeholder,
        width_dots=cfg.paper_width_dots,
        raster_fonts=tuple(cfg.raster_fonts),
    )
    printer = EscPosPrinter(
        name,
        port,
        baudrate=cfg.baudrate,
        status_back=cfg.status_back,
        confirm_print=cfg.confirm_print,
        xonxoff=cfg.flow_control == "xonxoff",
        profile=profile,
    )
    return printer, simulator


ENTRY = serial_entry(EscposDevice, PRINTER, build)
