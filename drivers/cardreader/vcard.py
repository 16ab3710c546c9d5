"""A virtual smart card speaking vpcd's socket protocol, so tests and demos run the real PC/SC stack.

vpcd (vsmartcard) is a pcscd reader driver that waits for a card on TCP (35963 is reader
`Virtual PCD 00 00`, 35964 is `... 00 01`). Each message is a 2-byte big-endian length and a
payload; 1-byte payloads are control (00 power off, 01 power on, 02 reset, 04 get ATR, which
is answered with the ATR), longer ones are command APDUs answered with a response APDU.
Connecting is inserting the card, closing is removing it.

Run one by hand: `python -m drivers.cardreader.vcard --personality sscard`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

import structlog

from drivers.cardreader import records
from drivers.cardreader.apdu import PPSE_AID, SSC_AID

log = structlog.get_logger(__name__)

VPCD_PORT = 35963
# The reader pcscd lists for vpcd's first slot (the one on VPCD_PORT).
VIRTUAL_READER = "Virtual PCD 00 00"
Personality = Literal["sscard", "bank", "staff"]

_POWER_OFF, _POWER_ON, _RESET, _GET_ATR = 0x00, 0x01, 0x02, 0x04


def make_atr(historical: bytes) -> bytes:
    """An ATR offering T=0 and T=1 with the given historical bytes (TCK computed)."""
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes((tck,))


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + sw.to_bytes(2, "big")


class Applet(Protocol):
    """What a personality implements: its ATR and the answer to each command APDU."""

    atr: bytes

    def reset(self) -> None: ...

    def process(self, apdu: bytes) -> bytes: ...


@dataclass(slots=True)
class _Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None

    @classmethod
    def parse(cls, apdu: bytes) -> _Command | None:
        if len(apdu) < 4:
            return None
        cla, ins, p1, p2 = apdu[:4]
        if len(apdu) == 4:
            return cls(cla, ins, p1, p2, b"", None)
        if len(apdu) == 5:
            return cls(cla, ins, p1, p2, b"", apdu[4] or 256)
        lc = apdu[4]
        if len(apdu) == 5 + lc:
            return cls(cla, ins, p1, p2, apdu[5:], None)
        if len(apdu) == 6 + lc:
            return cls(cla, ins, p1, p2, apdu[5:-1], apdu[-1] or 256)
        return None


class _IsoApplet:
    """Shared ISO 7816-4 behaviour: response chaining with 61xx / GET RESPONSE."""

    atr = make_atr(b"\x80EDGE-GW-TEST")

    def __init__(self) -> None:
        self._pending = b""

    def reset(self) -> None:
        self._pending = b""

    def _chain(self, data: bytes) -> bytes:
        """Answer 61xx and keep the data for GET RESPONSE, as T=0 cards do."""
        self._pending = data
        return _sw(0x6100 | min(len(data), 256) & 0xFF)

    def _get_response(self, cmd: _Command) -> bytes:
        if not self._pending:
            return _sw(0x6985)
        le = cmd.le or 256
        chunk, self._pending = self._pending[:le], self._pending[le:]
        if self._pending:
            return _sw(0x6100 | min(len(self._pending), 256) & 0xFF, chunk)
        return _sw(0x9000, chunk)

    def process(self, apdu: bytes) -> bytes:
        cmd = _Command.parse(apdu)
        if cmd is None:
            return _sw(0x6700)
        if cmd.ins == 0xC0 and cmd.cla == 0x00:
            return self._get_response(cmd)
        self._pending = b""
        if cmd.cla == 0xFF:
            return self.reader_command(cmd)
        if cmd.cla != 0x00:
            return _sw(0x6E00)
        return self.command(cmd)

    def reader_command(self, cmd: _Command) -> bytes:
        # A contact card behind a PC/SC reader: the reader does not support GET DATA UID.
        return _sw(0x6A81)

    def command(self, cmd: _Command) -> bytes:
        return _sw(0x6D00)


@dataclass(frozen=True, slots=True)
class SocialSecurityData:
    """The content of a virtual social security card; defaults are an obviously fake identity."""

    card_identifier: str = "110100D156000005"
    spec_version: str = "3.00"
    issued_on: dt.date = dt.date(2020, 1, 1)
    expires_on: dt.date | None = dt.date(2030, 1, 1)
    card_number: str = "TEST00001"
    id_number: str = "11010519491231002" + records.id_check_char("11010519491231002")
    name: str = "测试持卡人"

    def items(self) -> dict[int, bytes]:
        """Item number -> value bytes, in the card's encoding."""
        expiry = records.bcd_date(self.expires_on) if self.expires_on else b"\x00" * 4
        return {
            records.ITEM_CARD_IDENTIFIER: self.card_identifier.encode("ascii"),
            0x02: b"3",
            records.ITEM_SPEC_VERSION: self.spec_version.encode("ascii"),
            0x04: bytes.fromhex("110000000000000000000000"),
            records.ITEM_ISSUE_DATE: records.bcd_date(self.issued_on),
            records.ITEM_EXPIRY_DATE: expiry,
            records.ITEM_CARD_NUMBER: self.card_number.encode("ascii"),
            records.ITEM_ID_NUMBER: self.id_number.encode("ascii"),
            records.ITEM_NAME: self.name.encode("gbk").ljust(30, b"\x00"),
            0x0A: b"1",
            0x0B: b"\x01",
            0x0D: bytes.fromhex("19491231"),
        }


class SocialSecurityApplet(_IsoApplet):
    """The social security application: SELECT by AID, EF05/EF06, READ RECORD per item."""

    atr = make_atr(b"\x80SSC-EDGE-TEST")
    _FILES: ClassVar[dict[bytes, tuple[int, ...]]] = {
        records.EF05: (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07),
        records.EF06: (0x08, 0x09, 0x0A, 0x0B, 0x0D),
    }

    def __init__(self, data: SocialSecurityData | None = None) -> None:
        super().__init__()
        self.data = data or SocialSecurityData()
        self._items = self.data.items()
        self._app_selected = False
        self._ef: bytes | None = None

    def reset(self) -> None:
        super().reset()
        self._app_selected = False
        self._ef = None

    def command(self, cmd: _Command) -> bytes:
        if cmd.ins == 0xA4 and cmd.p1 == 0x04:
            if cmd.data != SSC_AID:
                self._app_selected = False
                return _sw(0x6A82)
            self._app_selected = True
            self._ef = None
            fci = records.encode_tlv(0x6F, records.encode_tlv(0x84, SSC_AID))
            return self._chain(fci)
        if cmd.ins == 0xA4 and cmd.p1 == 0x02:
            if len(cmd.data) != 2:
                return _sw(0x6700)
            if not self._app_selected or cmd.data not in self._FILES:
                return _sw(0x6A82)
            self._ef = cmd.data
            return _sw(0x9000)
        if cmd.ins == 0xB2:
            if self._ef is None:
                return _sw(0x6986)
            if cmd.p2 != 0x04:
                return _sw(0x6A86)
            if cmd.p1 not in self._FILES[self._ef]:
                return _sw(0x6A83)
            record = records.encode_item(cmd.p1, self._items[cmd.p1])
            if cmd.le != len(record):
                return _sw(0x6C00 | len(record))
            return _sw(0x9000, record)
        if cmd.ins == 0x20:
            return _sw(0x6982)
        return _sw(0x6D00)


@dataclass(frozen=True, slots=True)
class BankData:
    """A virtual contactless bank card: one payment application behind the PPSE."""

    aid: bytes = bytes.fromhex("A000000333010101")
    label: str = "UnionPay Debit"
    # Only here to prove the driver never reads it: a test PAN that no network would accept.
    pan: bytes = bytes.fromhex("6200000000000000")


class BankApplet(_IsoApplet):
    """PPSE directory with one application; the application answers its FCI and records."""

    atr = make_atr(b"\x80BANK-EDGE-TEST")

    def __init__(self, data: BankData | None = None) -> None:
        super().__init__()
        self.data = data or BankData()
        self._app_selected = False

    def reset(self) -> None:
        super().reset()
        self._app_selected = False

    def command(self, cmd: _Command) -> bytes:
        if cmd.ins == 0xA4 and cmd.p1 == 0x04:
            self._app_selected = False
            if cmd.data == PPSE_AID:
                entry = (
                    records.encode_tlv(records.TAG_AID, self.data.aid)
                    + records.encode_tlv(records.TAG_LABEL, self.data.label.encode("ascii"))
                    + records.encode_tlv(records.TAG_PRIORITY, b"\x01")
                )
                directory = records.encode_tlv(
                    records.TAG_FCI_ISSUER_DISCRETIONARY,
                    records.encode_tlv(records.TAG_DIRECTORY_ENTRY, entry),
                )
                fci = records.encode_tlv(
                    records.TAG_FCI,
                    records.encode_tlv(0x84, PPSE_AID)
                    + records.encode_tlv(records.TAG_FCI_PROPRIETARY, directory),
                )
                return self._chain(fci)
            if cmd.data == self.data.aid:
                self._app_selected = True
                fci = records.encode_tlv(
                    records.TAG_FCI,
                    records.encode_tlv(0x84, self.data.aid)
                    + records.encode_tlv(
                        records.TAG_FCI_PROPRIETARY,
                        records.encode_tlv(records.TAG_LABEL, self.data.label.encode("ascii")),
                    ),
                )
                return self._chain(fci)
            return _sw(0x6A82)
        if cmd.ins == 0xB2 and self._app_selected:
            record = records.encode_tlv(0x70, records.encode_tlv(0x5A, self.data.pan))
            return _sw(0x9000, record)
        return _sw(0x6D00)


class StaffApplet(_IsoApplet):
    """A contactless staff badge: the reader's GET DATA returns its UID; no application."""

    # PC/SC part 3 ATR of a storage card (MIFARE Classic 1K) seen through a contactless reader.
    atr = make_atr(bytes.fromhex("804F0CA00000030603000100000000"))

    def __init__(self, uid: bytes = bytes.fromhex("04A1B2C3D4E5F6")) -> None:
        super().__init__()
        self.uid = uid

    def reader_command(self, cmd: _Command) -> bytes:
        if cmd.ins != 0xCA:
            return _sw(0x6D00)
        if cmd.p1 != 0x00 or cmd.p2 != 0x00:
            return _sw(0x6A81)
        if cmd.le not in (None, 256, len(self.uid)):
            return _sw(0x6C00 | len(self.uid))
        return _sw(0x9000, self.uid)

    def command(self, cmd: _Command) -> bytes:
        if cmd.ins == 0xA4:
            return _sw(0x6A82)
        return _sw(0x6D00)


def personality(kind: Personality) -> Applet:
    """A fresh applet for a personality name (config `simulate` values)."""
    factories: dict[str, Callable[[], Applet]] = {
        "sscard": SocialSecurityApplet,
        "bank": BankApplet,
        "staff": StaffApplet,
    }
    try:
        return factories[kind]()
    except KeyError:
        raise ValueError(f"unknown personality {kind!r}; use sscard, bank or staff") from None


@dataclass(slots=True)
class CardFaults:
    """Misbehaviour on demand; change the fields while the card is inserted."""

    mute: bool = False  # answer power and ATR, never answer an APDU
    remove_after_apdus: int | None = None  # pull the card on receiving this many more APDUs
    status_words: dict[int, int] = field(default_factory=dict)  # INS -> forced status word


class VirtualCardError(Exception):
    """The virtual card could not reach vpcd (pcscd not running or vpcd not installed)."""


class VirtualCard:
    """One virtual card on one vpcd slot: `insert()` connects, `remove()` closes."""

    def __init__(
        self,
        applet: Applet,
        *,
        host: str = "127.0.0.1",
        port: int = VPCD_PORT,
        faults: CardFaults | None = None,
    ) -> None:
        self.applet = applet
        self.host = host
        self.port = port
        self.faults = faults or CardFaults()
        self.commands: list[bytes] = []  # headers (CLA INS P1 P2) received, for tests
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.removed = asyncio.Event()

    @property
    def inserted(self) -> bool:
        return self._task is not None and not self._task.done()

    async def insert(self, *, timeout: float = 10.0) -> None:
        """Connect to vpcd, retrying until pcscd has loaded it or the timeout passes."""
        if self.inserted:
            return
        self.applet.reset()
        delay = 0.05
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                        break
                    except OSError:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.5)
        except TimeoutError:
            raise VirtualCardError(
                f"vpcd not listening on {self.host}:{self.port} after {timeout}s "
                "(is pcscd running with vsmartcard-vpcd installed?)"
            ) from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._quick_ack(writer)
        self._writer = writer
        self.removed = asyncio.Event()
        self._task = asyncio.create_task(self._serve(reader, writer), name="vcard-serve")
        log.debug("vcard_inserted", port=self.port)

    async def remove(self) -> None:
        """Pull the card: close the connection and wait for the serving task to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.debug("vcard_removed", port=self.port)

    async def __aenter__(self) -> VirtualCard:
        await self.insert()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.remove()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(2)
                self._quick_ack(writer)
                (size,) = struct.unpack(">H", header)
                payload = await reader.readexactly(size)
                self._quick_ack(writer)
                answer = self._answer(payload)
                if answer is _PULL:
                    return
                if answer is not None:
                    writer.write(struct.pack(">H", len(answer)) + answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.removed.set()
            writer.close()
            # A close waits for unsent bytes; if vpcd stops reading, drop the connection outright,
            # so the removal always reaches pcscd (a half-open slot would stall its reader thread).
            try:
                async with asyncio.timeout(2.0):
                    await writer.wait_closed()
            except Exception:
                writer.transport.abort()

    @staticmethod
    def _quick_ack(writer: asyncio.StreamWriter) -> None:
        # vpcd writes the length and the APDU as two segments; with Nagle on its side and
        # delayed ACK on ours every command would wait ~40 ms for our ACK. Setting quick ACK
        # sends a pending ACK at once; Linux re-arms delayed ACK by itself, so set it each read.
        sock = writer.get_extra_info("socket")
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if sock is not None and quickack is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)

    def _answer(self, payload: bytes) -> bytes | None:
        if len(payload) == 1:
            if payload[0] == _GET_ATR:
                return self.applet.atr
            if payload[0] in (_POWER_OFF, _POWER_ON, _RESET):
                self.applet.reset()
            return None
        self.commands.append(payload[:4])
        faults = self.faults
        if faults.remove_after_apdus is not None:
            faults.remove_after_apdus -= 1
            if faults.remove_after_apdus <= 0:
                faults.remove_after_apdus = None
                return _PULL
        if faults.mute:
            return None
        if len(payload) >= 2 and payload[1] in faults.status_words:
            return faults.status_words[payload[1]].to_bytes(2, "big")
        return self.applet.process(payload)


_PULL = b"<pull>"


async def _main(kind: Personality, host: str, port: int) -> None:
    card = VirtualCard(personality(kind), host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await card.insert(timeout=30.0)
    print(f"virtual {kind} card inserted on {host}:{port}; Ctrl-C removes it", flush=True)
    waiter = asyncio.create_task(card.removed.wait())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (waiter, stopper):
        task.cancel()
    await asyncio.gather(waiter, stopper, return_exceptions=True)
    await card.remove()


def main(argv: list[str] | None = None) -> None:
    """Command line: insert one virtual card until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m drivers.cardreader.vcard")
    parser.add_argument("--personality", choices=["sscard", "bank", "staff"], default="sscard")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=VPCD_PORT)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.personality, args.host, args.port))


if __name__ == "__main__":
    main()
