"""Social security card items over READ RECORD: by position, else by identifier, else a scan.

A card lays out its records as the spec says (records.EF05_POSITIONS / EF06_POSITIONS) and
answers READ RECORD by position (P2 04). A card that answers otherwise -- `6A 83` for the
position, `6A 86` / `6B 00` because it does not take P2 04, or a record tagged with another item
-- is read by identifier (P2 00, P1 = the item's tag), which ISO 7816-4 defines for exactly this.
A card that refuses identifier addressing too is scanned position by position until the tag
shows up or the file ends (`6A 83`). Every answer's tag is checked against the item wanted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from drivers.cardreader import apdu
from drivers.cardreader.errors import (
    InsNotSupported,
    RecordNotFound,
    RecordTagMismatch,
    WrongParameters,
)
from drivers.cardreader.records import EF05, EF05_POSITIONS, EF06, EF06_POSITIONS, decode_item

log = structlog.get_logger(__name__)

Command = Callable[[bytes], Awaitable[bytes]]
Mode = Literal["position", "identifier", "scan"]

# A record file longer than this is not a social security EF (the spec's EF06 has 7 records).
MAX_SCAN_POSITIONS = 16

# Answers meaning "this card does not address its records that way": try the next way.
_NOT_THIS_WAY = (RecordNotFound, WrongParameters, RecordTagMismatch)
_NO_IDENTIFIER_MODE = (WrongParameters, InsNotSupported)


@dataclass(slots=True)
class ItemsRead:
    """Item values (tag -> value) and, per file, the addressing modes that delivered them."""

    items: dict[int, bytes] = field(default_factory=dict)
    modes: dict[str, list[Mode]] = field(default_factory=dict)
    apdus: int = 0

    def mode_summary(self, fid: bytes) -> str:
        """E.g. "position" or "position+identifier" for one file; log-safe."""
        used = self.modes.get(fid.hex().upper(), [])
        return "+".join(dict.fromkeys(used)) or "none"


async def _read(command: Command, out: ItemsRead, p1: int, p2: int) -> bytes:
    out.apdus += 1
    return await command(apdu.read_record(p1, p2))


async def _by_position(command: Command, out: ItemsRead, item: int, position: int) -> bytes:
    return decode_item(item, await _read(command, out, position, apdu.P2_BY_POSITION))


async def _by_identifier(command: Command, out: ItemsRead, item: int) -> bytes:
    return decode_item(item, await _read(command, out, item, apdu.P2_BY_IDENTIFIER))


async def _by_scan(command: Command, out: ItemsRead, item: int) -> bytes:
    for position in range(1, MAX_SCAN_POSITIONS + 1):
        try:
            record = await _read(command, out, position, apdu.P2_BY_POSITION)
        except RecordNotFound:
            break
        if record[:1] == bytes((item,)):
            return decode_item(item, record)
    raise RecordNotFound(0x6A83, command=f"item {item:02X} (not at any position, no identifier addressing)")


async def select_file(command: Command, fid: bytes, out: ItemsRead) -> None:
    """SELECT the EF with P1 02 (an EF of the current DF); a card refusing that P1 gets P1 00.

    Readers differ: a7082633/HDOS_VC6 HD_XJDLL.cpp and yxsylyh/hiquotion_cpp SIDCardOperation.cpp
    send `00 A4 02 00 02 EF 0x`, leithergit/Z390Kylin evolis_z390_printer.cpp `00 A4 00 00 02 EF 0x`.
    """
    out.apdus += 1
    try:
        await command(apdu.select_ef(fid))
    except WrongParameters:
        log.info("sscard_select_p1_refused", file=fid.hex().upper())
        out.apdus += 1
        await command(apdu.select_ef(fid, p1=0x00))


async def read_file_items(command: Command, fid: bytes, positions: dict[int, int], out: ItemsRead) -> None:
    """Select `fid` and read each item of `positions` into `out`, falling back per item as needed."""
    await select_file(command, fid, out)
    modes = out.modes.setdefault(fid.hex().upper(), [])
    mode: Mode = "position"
    for item, position in positions.items():
        if mode == "position":
            try:
                out.items[item] = await _by_position(command, out, item, position)
                modes.append("position")
                continue
            except _NOT_THIS_WAY as err:
                log.info(
                    "sscard_position_read_refused",
                    file=fid.hex().upper(),
                    item=f"{item:02X}",
                    position=position,
                    answer=type(err).__name__,
                )
                mode = "identifier"
        if mode == "identifier":
            try:
                out.items[item] = await _by_identifier(command, out, item)
                modes.append("identifier")
                continue
            except _NO_IDENTIFIER_MODE as err:
                log.info("sscard_identifier_read_refused", file=fid.hex().upper(), answer=type(err).__name__)
                mode = "scan"
        out.items[item] = await _by_scan(command, out, item)
        modes.append("scan")


async def read_social_security_items(command: Command) -> ItemsRead:
    """EF05 and EF06 items of the (already selected) social security application."""
    out = ItemsRead()
    await read_file_items(command, EF05, EF05_POSITIONS, out)
    await read_file_items(command, EF06, EF06_POSITIONS, out)
    return out
