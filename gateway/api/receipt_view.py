"""Reads back what a receipt job prints: ESC/POS job bytes to lines (for the simulated printer's view).

The reference kiosk page shows the citizen the receipt the simulated printer received. The commands
decoded are the ones a receipt job uses (Epson ESC/POS Command Reference, reference.epson-biz.com;
the same byte values in Odoo's hw_escpos/escpos/constants.py and archsh/escpos-python
escpos/core/commands.py): LF 0x0A ends a line; ESC @ (1B 40) resets; ESC a n (1B 61) alignment
0/1/2; ESC E n (1B 45) bold; GS ! n (1D 21) character size (n & 0x11: double); ESC d n (1B 64)
feeds n lines; GS V m (1D 56; m 0x41/0x42 take one more byte n) cuts; FS & / FS . (1C 26 / 1C 2E)
Chinese (GB18030) mode on/off; GS ( k pL pH cn fn ... (1D 28 6B) 2D symbols, whose fn 0x50 (with
cn 0x31, QR) stores the data after the byte m; DLE EOT n (10 04) is a real-time status query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
_ALIGN = {0: "left", 1: "center", 2: "right", 0x30: "left", 0x31: "center", 0x32: "right"}


@dataclass
class Receipt:
    """The printed lines, a QR code's text if any, and whether the paper was cut."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    qr: str | None = None
    cut: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "qr": self.qr, "cut": self.cut}


def decode_receipt(job: bytes) -> Receipt:
    """Decode a job; unknown commands are skipped, text is GB18030 (ASCII outside Chinese mode)."""
    return _Decoder(job).run()


class _Decoder:
    """Walks a job's bytes: text into lines with their style, the commands it knows, the rest skipped."""

    def __init__(self, job: bytes) -> None:
        self.job = job
        self.receipt = Receipt()
        self.text = bytearray()
        self.style: dict[str, Any] = {"bold": False, "double": False, "align": "left"}

    def run(self) -> Receipt:
        job, i, n = self.job, 0, len(self.job)
        while i < n:
            b = job[i]
            nxt = job[i + 1] if i + 1 < n else -1
            if b == 0x0A:
                self.end_line()
                i += 1
            elif b == ESC:
                i += self.esc(i, nxt)
            elif b == GS:
                i += self.gs(i, nxt)
            elif b == FS and nxt in (0x26, 0x2E):
                i += 2
            elif b == DLE and nxt == 0x04:
                i += 3
            elif b < 0x20:
                i += 1
            else:
                self.text.append(b)
                i += 1
        if self.text:
            self.end_line()
        while self.receipt.lines and not self.receipt.lines[-1]["text"]:
            self.receipt.lines.pop()
        return self.receipt

    def end_line(self) -> None:
        self.receipt.lines.append({"text": bytes(self.text).decode("gb18030", "replace"), **self.style})
        self.text.clear()

    def esc(self, i: int, nxt: int) -> int:
        """ESC commands; returns how many bytes they take."""
        job, has_arg = self.job, i + 2 < len(self.job)
        if nxt == 0x40:
            self.style = {"bold": False, "double": False, "align": "left"}
            return 2
        if nxt == 0x61 and has_arg:
            self.style["align"] = _ALIGN.get(job[i + 2], "left")
            return 3
        if nxt == 0x45 and has_arg:
            self.style["bold"] = bool(job[i + 2] & 1)
            return 3
        if nxt == 0x64 and has_arg:
            if self.text:
                self.end_line()
            for _ in range(job[i + 2]):
                self.end_line()
            return 3
        if nxt in (0x21, 0x74, 0x4D, 0x2D):  # ESC ! / t / M / - n: one argument
            return 3
        return 1

    def gs(self, i: int, nxt: int) -> int:
        """GS commands; returns how many bytes they take."""
        job, n = self.job, len(self.job)
        if nxt == 0x21 and i + 2 < n:
            self.style["double"] = bool(job[i + 2] & 0x11)
            return 3
        if nxt == 0x56 and i + 2 < n:
            self.receipt.cut = True
            return 4 if job[i + 2] in (0x41, 0x42) else 3
        if nxt == 0x28 and i + 4 < n:  # GS ( X pL pH data
            size = job[i + 3] | job[i + 4] << 8
            body = job[i + 5 : i + 5 + size]
            if job[i + 2] == 0x6B and len(body) >= 3 and body[0] == 0x31 and body[1] == 0x50:
                self.receipt.qr = body[3:].decode("utf-8", "replace")
            return 5 + size
        if nxt == 0x61:  # GS a n: status push mask
            return 3
        return 1
