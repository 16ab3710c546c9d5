"""A SAM_V reader simulator speaking the real frames over a pseudo-terminal.

Used by tests, the benchmark and the daemon's `sim://` ports. `start()` returns a stable
path (a symlink to the current /dev/pts/N): `unplug()` removes it and closes the pty,
`replug()` makes a new pty and points the same path at it, so a driver that keeps
reopening its configured path sees the device come back.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from drivers.base import FrameError
from drivers.idcard.card_types import IdDocument, encode_card
from drivers.idcard.foreigner import sample_foreigner_card
from drivers.idcard.foreigner2023 import sample_foreigner2023_card
from drivers.idcard.frames import (
    HEADER_LEN,
    MAX_FRAME,
    PREAMBLE,
    CardData,
    Command,
    Reply,
    Request,
    Status,
    decode_request,
    encode_card_data,
    encode_reply,
    encode_sam_id,
    frame_len,
)
from drivers.idcard.hmt import sample_hmt_permit
from drivers.idcard.identity import sample_card, sample_photo
from drivers.serialio.framing import PreambleFramer
from drivers.serialio.simport import PtyEndpoint

log = structlog.get_logger(__name__)

DEFAULT_GARBAGE = b"\x00\xff\x13\xaa\xaa\x96\x55"
SAM_ID_PARTS = (5, 1, 20230101, 12345, 987654321)
# The card an auto-presenting simulator shows (config devices.X.sim_card); "unknown_type" is a
# block whose type code (Z) no reader SDK names: the driver answers unsupported_card_type.
SIM_CARDS = ("resident", "foreign_permanent", "hmt_residence", "foreign_permanent_2023", "unknown_type")


@dataclass(frozen=True, slots=True)
class RawCard:
    """A card given as its raw text block (published test vectors, types the driver does not parse)."""

    text: bytes
    photo: bytes = b""
    fingerprint: bytes | None = None

    def __repr__(self) -> str:
        return f"RawCard(text={len(self.text)} bytes, photo={len(self.photo)} bytes)"


def sim_card(kind: str) -> IdDocument | RawCard:
    """The fake card a simulator presents for a `sim_card` setting (names and numbers are test data)."""
    if kind == "foreign_permanent":
        return sample_foreigner_card()
    if kind == "hmt_residence":
        return sample_hmt_permit()
    if kind == "foreign_permanent_2023":
        return sample_foreigner2023_card()
    if kind == "unknown_type":
        text = bytearray(encode_card(sample_foreigner2023_card()))
        text[248:250] = "Z".encode("utf-16-le")
        return RawCard(bytes(text), sample_photo(4))
    if kind == "resident":
        return sample_card()
    raise ValueError(f"unknown simulated card {kind!r}; one of {', '.join(SIM_CARDS)}")


class Phase(enum.Enum):
    """Where the card in the field is in the find/select/read cycle."""

    ABSENT = "absent"
    PRESENT = "present"
    FOUND = "found"
    SELECTED = "selected"
    READ = "read"  # read done: hidden from find until it leaves the field


class IdCardSimulator:
    """A SAM_V reader with a card slot, fault injection and an auto-present demo mode."""

    def __init__(
        self,
        *,
        name: str = "idcard",
        baudrate: int = 115200,
        pace: bool = True,
        auto_present: bool = False,
        auto_present_delay: float = 0.3,
        auto_remove_delay: float = 0.5,
        read_delay: float = 0.0,
        fingerprint: bytes | None = None,
        card: str = "resident",
    ) -> None:
        self.presents = sim_card(card)  # what insert_card() puts in the field by default
        self.port = PtyEndpoint(self._on_bytes, name=name, baudrate=baudrate, pace=pace)
        self._framer = PreambleFramer(
            PREAMBLE,
            header_len=HEADER_LEN,
            frame_len=frame_len,
            max_frame=MAX_FRAME,
            check=None,  # the reader answers a bad checksum with status 10 instead of dropping
        )
        self.auto_present = auto_present
        self.auto_present_delay = auto_present_delay
        self.auto_remove_delay = auto_remove_delay
        self.read_delay = read_delay
        self.fingerprint = fingerprint if fingerprint is not None else bytes(range(256)) * 4
        self.card: IdDocument | RawCard | None = None
        self.phase = Phase.ABSENT
        self.sam_status = Status.OK
        self.new_address: str | None = None
        # What select card answers besides its status (8 zero bytes by the protocol).
        self.select_data = bytes(8)
        self.requests: list[Request] = []
        self.garbage_between_frames = False
        self._injected: deque[tuple[Command | None, int]] = deque()
        self._corrupt_next = 0
        self._stall_next: int | None = None
        self._delayed: deque[tuple[Command | None, float]] = deque()
        self._queue: asyncio.Queue[Request] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        """Open the pty; returns the driver-side path (stable across unplug/replug)."""
        path = await self.port.start()
        self._worker = asyncio.create_task(self._serve(), name="idcard-sim")
        return path

    async def stop(self) -> None:
        tasks = [t for t in (self._worker, *self._timers) if t is not None]
        self._worker = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()
        await self.port.stop()

    # --- the card slot ---------------------------------------------------------------------

    def insert_card(self, identity: IdDocument | RawCard | None = None) -> None:
        """Put a card in the field (a fresh presentation: it can be read once)."""
        self.card = identity if identity is not None else self.presents
        self.phase = Phase.PRESENT

    def remove_card(self) -> None:
        self.card = None
        self.phase = Phase.ABSENT

    # --- faults ----------------------------------------------------------------------------

    def inject_status(self, status: int, *, command: Command | None = None, times: int = 1) -> None:
        """Answer the next `times` matching commands (any when None) with `status`."""
        for _ in range(times):
            self._injected.append((command, status))

    def corrupt_next_reply(self, times: int = 1) -> None:
        """Send the next replies with a wrong checksum."""
        self._corrupt_next += times

    def stall_next_reply(self, after: int = 9) -> None:
        """Send only the first `after` bytes of the next reply, then nothing."""
        self._stall_next = after

    def delay_next_reply(self, seconds: float, *, command: Command | None = None) -> None:
        """Answer the next matching command (any when None) only after `seconds`, whole and valid:
        a reader that is slow, not broken. Later requests queue behind it, as on a half-duplex line."""
        self._delayed.append((command, seconds))

    async def unplug(self) -> None:
        self._framer.reset()
        await self.port.unplug()

    async def replug(self) -> None:
        await self.port.replug()

    # --- serving ---------------------------------------------------------------------------

    def _on_bytes(self, data: bytes) -> None:
        frames, _ = self._framer.feed(data)
        for frame in frames:
            try:
                request = decode_request(frame)
            except FrameError as err:
                self._queue.put_nowait(Request(-1, 0x10 if "checksum" in str(err) else 0x11))
                continue
            self._queue.put_nowait(request)

    async def _serve(self) -> None:
        while True:
            request = await self._queue.get()
            if request.cmd < 0:
                reply = Reply(0, 0, request.para)
            else:
                self.requests.append(request)
                reply = await self._answer(request)
                for i, (only, seconds) in enumerate(self._delayed):
                    if only is None or only is request.command:
                        del self._delayed[i]
                        await asyncio.sleep(seconds)
                        break
            await self._send(reply)

    async def _send(self, reply: Reply) -> None:
        wire = encode_reply(reply)
        if self._corrupt_next:
            self._corrupt_next -= 1
            wire = wire[:-1] + bytes([wire[-1] ^ 0x5A])
        if self.garbage_between_frames:
            wire = DEFAULT_GARBAGE + wire
        if self._stall_next is not None:
            wire, self._stall_next = wire[: self._stall_next], None
        await self.port.send(wire)

    async def _answer(self, request: Request) -> Reply:
        command = request.command
        if command is None:
            return Reply(0, 0, Status.BAD_COMMAND)
        for i, (only, status) in enumerate(self._injected):
            if only is None or only is command:
                del self._injected[i]
                return Reply(0, 0, status)
        if command in (Command.STATUS, Command.RESET_SAM):
            return Reply(0, 0, self.sam_status)
        if command is Command.SAM_ID:
            return Reply(0, 0, Status.OK, encode_sam_id(SAM_ID_PARTS))
        if command is Command.FIND_CARD:
            return self._find()
        if command is Command.SELECT_CARD:
            if self.card is not None and self.phase in (Phase.FOUND, Phase.SELECTED):
                self.phase = Phase.SELECTED
                return Reply(0, 0, Status.OK, self.select_data)
            return Reply(0, 0, Status.SELECT_FAILED)
        if command is Command.READ_NEW_ADDRESS:
            if self.phase is not Phase.SELECTED:
                return Reply(0, 0, Status.READ_FAILED)
            if self.new_address is None:
                return Reply(0, 0, Status.NO_CONTENT)
            return Reply(0, 0, Status.OK, self.new_address.ljust(35).encode("utf-16-le"))
        return await self._read(with_fingerprint=command is Command.READ_WITH_FINGERPRINT)

    def _find(self) -> Reply:
        if self.card is not None and self.phase in (Phase.PRESENT, Phase.FOUND, Phase.SELECTED):
            self.phase = Phase.FOUND
            return Reply(0, 0, Status.FIND_OK, bytes(4))
        if self.auto_present and self.card is None and not self._timers:
            self._later(self.auto_present_delay, self.insert_card)
        return Reply(0, 0, Status.NO_CARD)

    async def _read(self, *, with_fingerprint: bool) -> Reply:
        card = self.card
        if card is None or self.phase is not Phase.SELECTED:
            return Reply(0, 0, Status.READ_FAILED)
        if self.read_delay:
            await asyncio.sleep(self.read_delay)
        text = card.text if isinstance(card, RawCard) else encode_card(card)
        data = CardData(
            text,
            card.photo,
            (card.fingerprint or self.fingerprint) if with_fingerprint else None,
        )
        self.phase = Phase.READ
        if self.auto_present:
            self._later(self.auto_remove_delay, self.remove_card)
        return Reply(0, 0, Status.OK, encode_card_data(data))

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            action()

        task = asyncio.create_task(run())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
