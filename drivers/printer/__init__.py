"""Receipt printer, ESC/POS over serial or TCP 9100 (driver `escpos`)."""

from drivers.printer.driver import EscPosPrinter, PrintResult
from drivers.printer.errors import (
    CoverOpen,
    InvalidJob,
    PaperEnd,
    PaperEndDuringJob,
    PrinterFault,
    PrinterNeedsUser,
    PrinterOffline,
    PrinterTimeout,
)
from drivers.printer.frames import PrinterStatus
from drivers.printer.job import Align, Line, PrintJob, encode_job
from drivers.printer.simulator import Paper, PrinterSimulator

__all__ = [
    "Align",
    "CoverOpen",
    "EscPosPrinter",
    "InvalidJob",
    "Line",
    "Paper",
    "PaperEnd",
    "PaperEndDuringJob",
    "PrintJob",
    "PrintResult",
    "PrinterFault",
    "PrinterNeedsUser",
    "PrinterOffline",
    "PrinterSimulator",
    "PrinterStatus",
    "PrinterTimeout",
    "encode_job",
]
