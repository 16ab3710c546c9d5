"""A virtual smart card speaking vpcd's socket protocol, so tests and demos run the real PC/SC stack.

vpcd (vsmartcard) is a pcscd reader driver that waits for a card on TCP (35963 is reader
`Virtual PCD 00 00`, 35964 is `... 00 01`). Each message is a 2-byte big-endian length and a
payload; 1-byte payloads are control (00 power off, 01 power on, 02 reset, 04 get ATR, which
is answered with the ATR), longer ones are command APDUs answered with a response APDU.
Connecting is inserting the card, closing is removing it.

The cards answer as real ones do (the driver's modules name the public sources): READ RECORD
by position, by identifier and by short EF, 6A83 for a record that does not exist, binary card
identifiers, 6Cxx for a wrong Le; a T=0 ATR makes a card refuse a case 4 command carrying Le and
deliver data with 61xx + GET RESPONSE (vpcd passes the APDUs through as they are; what it cannot
do is fail a transmit while the card stays, so "transaction failed" is tested another way).

Run one by hand: `python -m drivers.cardreader.vcard --personality sscard` (or sscard-t0, bank,
bank-contact, staff).
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
from typing import Literal, Protocol

import structlog

from drivers.cardreader import records
from drivers.cardreader.apdu import PPSE_AID, PSE_AID, SSC_AID

log = structlog.get_logger(__name__)

VPCD_PORT = 35963
# The reader pcscd lists for vpcd's first slot (the one on VPCD_PORT).
VIRTUAL_READER = "Virtual PCD 00 00"
Personality = Literal["sscard", "sscard-t0", "bank", "bank-contact", "staff"]
PERSONALITIES: tuple[Personality, ...] = ("sscard", "sscard-t0", "bank", "bank-contact", "staff")
CardProtocol = Literal["T=0", "T=1"]

_POWER_OFF, _POWER_ON, _RESET, _GET_ATR = 0x00, 0x01, 0x02, 0x04


def make_atr(historical: bytes, protocol: CardProtocol = "T=1") -> bytes:
    """An ATR: "T=1" offers T=0 and T=1 (pcscd then picks T=1, TCK computed); "T=0" offers only T=0.

    ISO 7816-3: without TD1 the card speaks T=0 only and the ATR has no TCK.
    """
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    if protocol == "T=0":
        return b"\x3b" + bytes((len(historical),)) + historical
    body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes((tck,))


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + sw.to_bytes(2, "big")


class Applet(Protocol):
    """What a personality implements: its ATR and the answer to each command APDU."""

    @property
    def atr(self) -> bytes: ...

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

    @property
    def case(self) -> int:
        return (3 if self.data else 1) + (1 if self.le is not None else 0)

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
        if lc and len(apdu) == 5 + lc:
            return cls(cla, ins, p1, p2, apdu[5:], None)
        if lc and len(apdu) == 6 + lc:
            return cls(cla, ins, p1, p2, apdu[5:-1], apdu[-1] or 256)
        return None


class _IsoApplet:
    """ISO 7816-4 answer shapes as a T=0 or a T=1 card gives them.

    T=0: a case 4 command arriving with Le is malformed on that protocol (a reader in TPDU mode
    sends one byte more than P3 announces; the card answers 6700 here, real readers often fail
    the whole exchange). Data for a case 3/4 command comes with 61xx + GET RESPONSE; a case 2
    command whose Le (P3, 00 = 256) differs from what the card holds is answered 6Cxx.
    T=1: Le 00 means "all you have" and the data comes at once; a wrong non-zero Le gets 6Cxx.
    """

    HISTORICAL = b"\x80EDGE-GW-TEST"

    def __init__(self, *, protocol: CardProtocol = "T=1") -> None:
        self.protocol: CardProtocol = protocol
        self._pending = b""

    @property
    def atr(self) -> bytes:
        return make_atr(self.HISTORICAL, self.protocol)

    def reset(self) -> None:
        self._pending = b""

    def _chain(self, data: bytes) -> bytes:
        """Answer 61xx and keep the data for GET RESPONSE."""
        self._pending = data
        return _sw(0x6100 | min(len(data), 256) & 0xFF)

    def _reply(self, cmd: _Command, data: bytes) -> bytes:
        """Response data for `cmd`, shaped as this card's protocol delivers it."""
        t0 = self.protocol == "T=0"
        if cmd.case == 4 and t0:
            return _sw(0x6700)
        if cmd.case in (1, 3):
            return self._chain(data) if data else _sw(0x9000)
        assert cmd.le is not None
        if cmd.le == len(data) or (cmd.le == 256 and not t0 and len(data) <= 256):
            return _sw(0x9000, data)
        return _sw(0x6C00 | len(data) & 0xFF)

    def _get_response(self, cmd: _Command) -> bytes:
        if not self._pending:
            return _sw(0x6985)
        le = cmd.le or 256
        if le > len(self._pending) and self.protocol == "T=0":
            return _sw(0x6C00 | len(self._pending) & 0xFF)
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


# A fake card identification code shaped like the published one (region, "D156", serial, FF pad).
_FAKE_CARD_IDENTIFIER = bytes.fromhex("110100D15600000512345678FFFFFFFF")


@dataclass(frozen=True, slots=True)
class SocialSecurityData:
    """The content of a virtual social security card; defaults are an obviously fake identity."""

    card_identifier: bytes = _FAKE_CARD_IDENTIFIER  # 16 binary bytes
    spec_version: str = "3.00"
    issued_on: dt.date = dt.date(2020, 1, 1)
    expires_on: dt.date | None = dt.date(2030, 1, 1)
    card_number: str = "TEST00001"
    id_number: str = "11010519491231002" + records.id_check_char("11010519491231002")
    name: str = "测试持卡人"

    def items(self) -> dict[int, bytes]:
        """Item number -> value bytes, in the card's encoding (records.py names the sources)."""
        expiry = records.bcd_date(self.expires_on) if self.expires_on else b"\x00" * 4
        return {
            records.ITEM_CARD_IDENTIFIER: self.card_identifier,
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
            0x0C: bytes.fromhex("110105"),
            0x0D: bytes.fromhex("19491231"),
        }


# Record order in each file: position = index + 1. EF05 01-07 and EF06 08, 09 as published
# (records.py); EF06's later items follow protocols.md's order, which Z390Kylin's writer does not
# share (it puts 0A, 0B, 0D at 4, 5, 7) -- the driver reads neither.
SPEC_LAYOUT: dict[bytes, tuple[int, ...]] = {
    records.EF05: (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07),
    records.EF06: (0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D),
}
# A card whose EF06 records sit in another order: position reads find other tags.
REORDERED_LAYOUT: dict[bytes, tuple[int, ...]] = {
    records.EF05: SPEC_LAYOUT[records.EF05],
    records.EF06: (0x0A, 0x0B, 0x0C, 0x0D, 0x08, 0x09),
}
Addressing = Literal["position", "identifier"]
_SHORT_EF = {5: records.EF05, 6: records.EF06}


class SocialSecurityApplet(_IsoApplet):
    """The social security application: SELECT by AID, EF05/EF06, READ RECORD as ISO 7816-4 says.

    READ RECORD P2 04 reads the record at position P1 (of the current EF, or of short EF 5/6 when
    P2 names one); P2 00 reads the first record whose tag is P1. A record that does not exist is
    6A83; an addressing the card does not take (see `addressing`) is 6A86; a wrong Le is 6Cxx.
    """

    HISTORICAL = b"\x80SSC-EDGE-TEST"

    def __init__(
        self,
        data: SocialSecurityData | None = None,
        *,
        protocol: CardProtocol = "T=1",
        layout: dict[bytes, tuple[int, ...]] | None = None,
        addressing: frozenset[Addressing] = frozenset({"position", "identifier"}),
        select_p1: frozenset[int] = frozenset({0x00, 0x02}),
    ) -> None:
        super().__init__(protocol=protocol)
        self.data = data or SocialSecurityData()
        self._items = self.data.items()
        self.layout = layout or SPEC_LAYOUT
        self.addressing = addressing
        self.select_p1 = select_p1
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
            return self._reply(cmd, fci)
        if cmd.ins == 0xA4 and cmd.p1 in (0x00, 0x02):
            if cmd.p1 not in self.select_p1:
                return _sw(0x6A86)
            if len(cmd.data) != 2:
                return _sw(0x6700)
            if not self._app_selected or cmd.data not in self.layout:
                return _sw(0x6A82)
            self._ef = cmd.data
            return _sw(0x9000)
        if cmd.ins == 0xB2:
            return self._read_record(cmd)
        if cmd.ins == 0x20:
            return _sw(0x6982)
        return _sw(0x6D00)

    def _read_record(self, cmd: _Command) -> bytes:
        sfi, how = cmd.p2 >> 3, cmd.p2 & 0x07
        fid = self._ef if sfi == 0 else _SHORT_EF.get(sfi) if self._app_selected else None
        if fid is None:
            return _sw(0x6986 if sfi == 0 else 0x6A82)
        if sfi:
            self._ef = fid
        order = self.layout[fid]
        if how == 0x04 and "position" in self.addressing and cmd.p1 != 0:
            if cmd.p1 > len(order):
                return _sw(0x6A83)
            tag = order[cmd.p1 - 1]
        elif how == 0x00 and "identifier" in self.addressing and cmd.p1 != 0:
            if cmd.p1 not in order:
                return _sw(0x6A83)
            tag = cmd.p1
        else:
            return _sw(0x6A86)
        return self._reply(cmd, records.encode_item(tag, self._items[tag]))


@dataclass(frozen=True, slots=True)
class BankData:
    """A virtual bank card: one payment application, behind the PPSE or the PSE."""

    aid: bytes = bytes.fromhex("A000000333010101")
    label: str = "UnionPay Debit"
    # Only here to prove the driver never reads it: a test PAN that no network would accept.
    pan: bytes = bytes.fromhex("6200000000000000")


Interface = Literal["contactless", "contact"]
_PSE_SFI = 1


class BankApplet(_IsoApplet):
    """A bank card as seen through one interface.

    Contactless: the PPSE directory (6F/A5/BF0C/61). Contact: no PPSE (6A82); the PSE
    1PAY.SYS.DDF01 whose FCI names short EF 1 (tag 88), record 1 a `70` template with the entry,
    record 2 6A83 (the shape of openemv/emv-utils tests/emv_build_candidate_list_test.c), or,
    with `pse=False`, no directory at all: only the application's AID answers SELECT.
    """

    HISTORICAL = b"\x80BANK-EDGE-TEST"

    def __init__(
        self,
        data: BankData | None = None,
        *,
        interface: Interface = "contactless",
        pse: bool = True,
        protocol: CardProtocol = "T=1",
    ) -> None:
        super().__init__(protocol=protocol)
        self.data = data or BankData()
        self.interface = interface
        self.pse = pse
        self._selected: bytes | None = None

    def reset(self) -> None:
        super().reset()
        self._selected = None

    def _entry(self) -> bytes:
        entry = (
            records.encode_tlv(records.TAG_AID, self.data.aid)
            + records.encode_tlv(records.TAG_LABEL, self.data.label.encode("ascii"))
            + records.encode_tlv(records.TAG_PRIORITY, b"\x01")
        )
        return records.encode_tlv(records.TAG_DIRECTORY_ENTRY, entry)

    def _fci(self, name: bytes, proprietary: bytes) -> bytes:
        return records.encode_tlv(
            records.TAG_FCI,
            records.encode_tlv(records.TAG_DF_NAME, name)
            + records.encode_tlv(records.TAG_FCI_PROPRIETARY, proprietary),
        )

    def command(self, cmd: _Command) -> bytes:
        if cmd.ins == 0xA4 and cmd.p1 == 0x04:
            self._selected = None
            contact = self.interface == "contact"
            if cmd.data == PPSE_AID and not contact:
                directory = records.encode_tlv(records.TAG_FCI_ISSUER_DISCRETIONARY, self._entry())
                return self._reply(cmd, self._fci(PPSE_AID, directory))
            if cmd.data == PSE_AID and contact and self.pse:
                self._selected = PSE_AID
                sfi = records.encode_tlv(records.TAG_SFI, bytes((_PSE_SFI,)))
                language = records.encode_tlv(0x5F2D, b"zhen")
                return self._reply(cmd, self._fci(PSE_AID, sfi + language))
            if cmd.data == self.data.aid:
                self._selected = self.data.aid
                label = records.encode_tlv(records.TAG_LABEL, self.data.label.encode("ascii"))
                priority = records.encode_tlv(records.TAG_PRIORITY, b"\x01")
                return self._reply(cmd, self._fci(self.data.aid, label + priority))
            return _sw(0x6A82)
        if cmd.ins == 0xB2 and self._selected == PSE_AID:
            if cmd.p2 != (_PSE_SFI << 3) | 0x04:
                return _sw(0x6A82)
            if cmd.p1 != 1:
                return _sw(0x6A83)
            return self._reply(cmd, records.encode_tlv(records.TAG_RECORD_TEMPLATE, self._entry()))
        if cmd.ins == 0xB2 and self._selected == self.data.aid:
            record = records.encode_tlv(0x70, records.encode_tlv(0x5A, self.data.pan))
            return self._reply(cmd, record)
        return _sw(0x6D00)


class StaffApplet(_IsoApplet):
    """A contactless staff badge: the reader's GET DATA returns its UID; no application."""

    # PC/SC part 3 ATR of a storage card (MIFARE Classic 1K) seen through a contactless reader.
    ATR = make_atr(bytes.fromhex("804F0CA00000030603000100000000"))

    def __init__(self, uid: bytes = bytes.fromhex("04A1B2C3D4E5F6")) -> None:
        super().__init__()
        self.uid = uid

    @property
    def atr(self) -> bytes:
        return self.ATR

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
        "sscard-t0": lambda: SocialSecurityApplet(protocol="T=0"),
        "bank": BankApplet,
        "bank-contact": lambda: BankApplet(interface="contact", protocol="T=0"),
        "staff": StaffApplet,
    }
    try:
        return factories[kind]()
    except KeyError:
        raise ValueError(f"unknown personality {kind!r}; use {', '.join(factories)}") from None


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
        self.apdus: list[bytes] = []  # whole command APDUs received, for tests
        self.answers: list[bytes] = []  # status words sent back, for tests
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
        self.apdus.append(payload)
        faults = self.faults
        if faults.remove_after_apdus is not None:
            faults.remove_after_apdus -= 1
            if faults.remove_after_apdus <= 0:
                faults.remove_after_apdus = None
                return _PULL
        if faults.mute:
            return None
        if len(payload) >= 2 and payload[1] in faults.status_words:
            answer = faults.status_words[payload[1]].to_bytes(2, "big")
        else:
            answer = self.applet.process(payload)
        self.answers.append(answer[-2:])
        return answer


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
    parser.add_argument("--personality", choices=PERSONALITIES, default="sscard")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=VPCD_PORT)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.personality, args.host, args.port))


if __name__ == "__main__":
    main()
