"""The ID card reader (SAM_V over a serial port): typed commands, read_card, presence.

read_card returns the record of the document presented (resident ID card, foreigner's permanent
residence card 2017/2023, HMT residence permit; card_types.py); another type is UnsupportedCard.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

import structlog

from drivers.base import (
    DeviceState,
    DeviceUnavailable,
    DriverError,
    FrameError,
)
from drivers.idcard.card_types import IdDocument, UnsupportedCardType, parse_card
from drivers.idcard.errors import (
    BadRead,
    CardLost,
    CardNotPresented,
    CheckDigitError,
    NoCard,
    SamFault,
    SamvRejected,
    SamvTimeout,
    UnsupportedCard,
)
from drivers.idcard.frames import (
    Command,
    Reply,
    Request,
    Status,
    decode_card_data,
    decode_sam_id,
    status_name,
)
from drivers.idcard.identity import CardDataError, CheckDigitMismatch
from drivers.idcard.protocol import SamvProtocol
from drivers.idcard.reply_shapes import reply_fits
from drivers.serialio.device import SerialDevice
from drivers.serialio.exchange import ask, turn

log = structlog.get_logger(__name__)

_BAD_READ = frozenset(
    {
        Status.READ_FAILED,
        Status.RANDOM_FAILED,
        Status.CARD_AUTH_SAM_FAILED,
        Status.SAM_AUTH_CARD_FAILED,
        Status.VERIFY_FAILED,
    }
)
_SAM_FAULT = frozenset({Status.SAM_SELFTEST_FAILED, Status.SAM_NOT_AUTHORISED})
_SILENT_LIMIT = 3  # consecutive unanswered commands before the reader counts as offline
# How long past a command's own limit its reply is still waited for before the next command goes.
_LATE_GRACE_S = 0.25


class SamvReader(SerialDevice[SamvProtocol]):
    """A SAM_V resident ID card reader on a serial port (or pyserial URL).

    One command is in flight at a time. start() opens the port in the background, checks
    the SAM (status 11 FF) on every (re)open and runs a presence loop that emits
    `card_present` / `card_removed` / `card_read` events (no personal data).
    """

    driver = "samv"

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baudrate: int = 115200,
        poll_interval: float = 0.25,
        find_timeout: float = 0.1,
        read_timeout: float = 2.0,
        fingerprint_timeout: float = 3.0,
        status_timeout: float = 0.5,
        card_wait_timeout: float = 30.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
    ) -> None:
        super().__init__(
            name,
            port,
            baudrate=baudrate,
            protocol_factory=lambda: SamvProtocol(name),
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self._poll_interval = poll_interval
        self._find_timeout = find_timeout
        self._read_timeout = read_timeout
        self._fingerprint_timeout = fingerprint_timeout
        self._status_timeout = status_timeout
        self._card_wait_timeout = card_wait_timeout
        self._read_lock = asyncio.Lock()
        self._card_present = False
        self._must_leave = False
        self._silent = 0
        self._last_health = 0.0
        self._in_presence = False
        self._presence_quiet_until = 0.0

    # --- SerialDevice hooks ----------------------------------------------------------------

    async def _background_loop(self) -> None:
        await self._presence_loop()

    async def _health_check(self, timeout: float | None) -> None:
        await self.sam_status(timeout=timeout)

    # --- typed commands --------------------------------------------------------------------

    async def sam_status(self, *, timeout: float | None = None) -> None:
        """Ask the SAM for its status (11 FF); online on 90, hardware_error on a SAM fault."""
        try:
            await self._command(Command.STATUS, limit=timeout or self._status_timeout)
        except SamvTimeout:
            self._tracker.set(DeviceState.OFFLINE, "no answer to status (11 FF)")
            raise
        if not self.status.state.usable:
            self._tracker.set(DeviceState.ONLINE, "ready")

    async def reset_sam(self, *, timeout: float | None = None) -> None:
        await self._command(Command.RESET_SAM, limit=timeout or self._status_timeout)

    async def sam_id(self, *, timeout: float | None = None) -> str:
        reply = await self._command(Command.SAM_ID, limit=timeout or self._status_timeout)
        try:
            return decode_sam_id(reply.data)
        except FrameError as err:
            raise SamvRejected(str(err), device=self.name, code=reply.sw3) from err

    async def find_card(self, *, timeout: float | None = None) -> None:
        """Find card (20 01); NoCard when the field is empty."""
        try:
            await self._command(Command.FIND_CARD, limit=timeout or self._find_timeout)
        except NoCard:
            self._must_leave = False  # the field was seen empty: the last card has left
            raise

    async def select_card(self, *, timeout: float | None = None) -> None:
        """Select card (20 02); CardLost when the found card is gone."""
        await self._command(Command.SELECT_CARD, limit=timeout or self._find_timeout)

    async def read_text_photo(self, *, timeout: float | None = None) -> IdDocument:
        """Read text + photo (30 01) of the selected card, parsed by its type and check-digit verified."""
        return await self._read(fingerprint=False, limit=timeout)

    async def read_with_fingerprint(
        self,
        *,
        timeout: float | None = None,
    ) -> IdDocument:
        """Read text + photo + fingerprint (30 10) of the selected card."""
        return await self._read(fingerprint=True, limit=timeout)

    async def read_new_address(self, *, timeout: float | None = None) -> str | None:
        """Newest appended address (30 03), or None when the card has none (91)."""
        try:
            reply = await self._command(Command.READ_NEW_ADDRESS, limit=timeout or self._read_timeout)
        except SamvRejected as err:
            if err.code == Status.NO_CONTENT:
                return None
            raise
        try:
            return reply.data.decode("utf-16-le").rstrip(" \x00") or None
        except UnicodeDecodeError as err:
            raise BadRead("appended address is not UCS-2", device=self.name) from err

    async def read_card(
        self,
        *,
        timeout: float | None = None,
        fingerprint: bool = False,
    ) -> IdDocument:
        """Wait for a card (polling find), then select and read it, all within `timeout`.

        A card that was just read must leave the field before it is read again.
        """
        limit = self._card_wait_timeout if timeout is None else timeout
        self._require_usable()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        found = False
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(deadline), self._read_lock:
                self._tracker.set(DeviceState.BUSY, "reading card")
                try:
                    await self._wait_for_card()
                    found = True
                    card = await self._read(fingerprint=fingerprint, limit=None)
                finally:
                    if self.status.state is DeviceState.BUSY:
                        self._tracker.set(DeviceState.ONLINE, "ready")
        except TimeoutError as err:
            if isinstance(err, DriverError):
                raise
            if not found:
                raise CardNotPresented(
                    f"{self.name}: no card presented within {limit:g} s", device=self.name
                ) from None
            raise SamvTimeout(
                f"{self.name}: card read did not finish within {limit:g} s", device=self.name
            ) from None
        log.info(
            "card_read",
            device=self.name,
            ms=round((time.monotonic() - started) * 1000),
            fingerprint=fingerprint,
            card_type=card.document_type,
        )
        return card

    # --- internals -------------------------------------------------------------------------

    def _require_usable(self) -> None:
        self._link.require()
        state = self.status.state
        if state is DeviceState.HARDWARE_ERROR:
            raise DeviceUnavailable(f"{self.name}: {self.status.reason}", device=self.name, state=state)

    async def _wait_for_card(self) -> None:
        silent = 0
        while True:
            try:
                if await self._find():
                    try:
                        await self.select_card()
                        return
                    except CardLost:
                        pass  # the card moved away between find and select: keep waiting
                silent = 0
            except SamvTimeout:
                silent += 1
                if silent >= _SILENT_LIMIT:
                    raise
            await self._pause_unless_lost()

    async def _pause_unless_lost(self) -> None:
        """Sleep one poll interval, but fail at once if the port goes away meanwhile."""
        proto = self._link.require()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll_interval):
                await asyncio.shield(proto.lost)
        if proto.lost.done():
            raise DeviceUnavailable(
                f"{self.name}: port lost while waiting for a card",
                device=self.name,
                state=DeviceState.NO_DEVICE,
            )

    async def _find(self) -> bool:
        """One find; True only for a card that has not just been read."""
        try:
            await self.find_card()
        except NoCard:
            return False
        # Some readers find a card that stays in the field again; it is the same card.
        return not self._must_leave

    async def _read(self, *, fingerprint: bool, limit: float | None) -> IdDocument:
        command = Command.READ_WITH_FINGERPRINT if fingerprint else Command.READ_TEXT_PHOTO
        default = self._fingerprint_timeout if fingerprint else self._read_timeout
        reply = await self._command(command, limit=limit or default)
        try:
            data = decode_card_data(reply.data, fingerprint=fingerprint)
            card = parse_card(data.text, photo=data.photo, fingerprint=data.fingerprint)
        except UnsupportedCardType as err:
            # The reader read the card fine (it must leave the field now, as after any read);
            # it is a document this driver does not parse: say which type, never guess.
            self._must_leave = True
            self._card_present = False
            self._tracker.record_success()
            log.info("card_type_unsupported", device=self.name, card_type=err.code)
            raise UnsupportedCard(
                f"{self.name}: card type {err.code} is not supported; present another document",
                device=self.name,
                status=Status.OK,
                card_type=err.code,
            ) from err
        except CheckDigitMismatch as err:
            self._tracker.record_error("bad read: document number check digit")
            raise CheckDigitError(
                f"{self.name}: document number failed its check digit; present the card again",
                device=self.name,
            ) from err
        except (FrameError, CardDataError) as err:
            self._tracker.record_error(f"bad read: {err}")
            raise BadRead(f"{self.name}: card data unreadable: {err}", device=self.name) from err
        self._must_leave = True
        self._card_present = False
        self._tracker.record_success()
        self._tracker.emit("card_read", fingerprint=fingerprint, card_type=card.document_type)
        return card

    async def _command(self, command: Command, *, limit: float) -> Reply:
        if not self._in_presence:
            # A caller driving find/select/read itself must not have the presence loop's
            # find land between its select and its read.
            self._presence_quiet_until = time.monotonic() + 1.0
        reply = await self._transact(Request.of(command), limit=limit)
        self._raise_for(reply, command)
        return reply

    async def _transact(self, request: Request, *, limit: float) -> Reply:
        """Send one request and wait for its reply; one in flight, queue wait bounded."""
        # The longest any other command holds the reader is a fingerprint read.
        async with turn(self._gate, within=limit + self._fingerprint_timeout, busy=self._busy):
            proto = self._link.require()
            command = request.command
            (reply,) = await ask(
                proto.replies,
                lambda: proto.send(request),
                window=limit,
                no_reply=lambda: self._no_reply(request, limit),
                # Its reply may still come (the caller gave up, or the reader is slow): the next
                # command waits for it, or for the rest of this one's window plus a grace.
                owed_until=lambda sent_at: max(sent_at + limit, time.monotonic()) + _LATE_GRACE_S,
                fits=None if command is None else functools.partial(reply_fits, command),
                misfit=lambda reply: self._note_misfit(proto, request, reply),
            )
            self._note_answer()
            return reply

    def _busy(self) -> SamvTimeout:
        return SamvTimeout(f"{self.name}: reader busy", device=self.name)

    def _no_reply(self, request: Request, limit: float) -> SamvTimeout:
        self._note_silence()
        what = f"{self.name}: no reply to {_cmd_name(request)} within {limit:g} s"
        return SamvTimeout(what, device=self.name)

    def _note_misfit(self, proto: SamvProtocol, request: Request, reply: Reply) -> None:
        """Another command's late answer (its window had passed): not ours, and logged."""
        proto.mismatched += 1
        log.warning(
            "samv_mismatched_reply",
            device=self.name,
            command=_cmd_name(request),
            status=status_name(reply.sw3),
            data_len=len(reply.data),
        )

    def _note_silence(self) -> None:
        self._silent += 1
        self._tracker.record_error("no reply")
        if self._silent >= _SILENT_LIMIT and self.status.state.usable:
            self._tracker.set(DeviceState.OFFLINE, "reader not answering")

    def _note_answer(self) -> None:
        self._silent = 0
        if self.status.state is DeviceState.OFFLINE and self.status.reason == "reader not answering":
            self._tracker.set(DeviceState.ONLINE, "ready")

    def _raise_for(self, reply: Reply, command: Command) -> None:
        if reply.ok:
            return
        code = reply.sw3
        what = f"{self.name}: {command.name.lower()} answered {status_name(code)}"
        if reply.sw1 or reply.sw2:
            raise SamvRejected(
                f"{what} (SW1 SW2 {reply.sw1:02x}{reply.sw2:02x})", device=self.name, code=code
            )
        if code == Status.NO_CARD:
            raise NoCard(f"{self.name}: no card in the field", device=self.name)
        if code == Status.SELECT_FAILED:
            raise CardLost(f"{self.name}: card left the field", device=self.name)
        if code == Status.UNKNOWN_CARD_TYPE:
            raise UnsupportedCard(f"{self.name}: the reader does not know this card type", device=self.name)
        if code in _BAD_READ:
            self._tracker.record_error(what)
            raise BadRead(f"{what}; present the card again", device=self.name, status=code)
        if code in _SAM_FAULT:
            self._tracker.record_error(what)
            self._tracker.set(DeviceState.HARDWARE_ERROR, f"SAM fault: {status_name(code)}")
            log.error("sam_fault", device=self.name, status=status_name(code))
            raise SamFault(what, device=self.name, code=code)
        self._tracker.record_error(what)
        raise SamvRejected(what, device=self.name, code=code)

    async def _on_up(self, proto: SamvProtocol) -> None:
        del proto
        self._card_present = False
        self._silent = 0
        self._tracker.set(DeviceState.OFFLINE, "port open, checking SAM")
        await self.sam_status()

    async def _presence_loop(self) -> None:
        health_every = max(1.0, 4 * self._poll_interval)
        while True:
            await asyncio.sleep(self._poll_interval)
            if not self._link.connected:
                self._card_present = False
                continue
            if self._read_lock.locked() or time.monotonic() < self._presence_quiet_until:
                continue
            self._in_presence = True
            try:
                if not self.status.state.usable:
                    now = time.monotonic()
                    if now - self._last_health >= health_every:
                        self._last_health = now
                        await self.sam_status()
                    continue
                present = await self._find()
            except DriverError as err:
                log.debug("presence_poll_failed", device=self.name, error=str(err))
                continue
            finally:
                self._in_presence = False
            if self._read_lock.locked():
                continue  # a read started meanwhile; it owns the card now
            if present and not self._card_present:
                self._card_present = True
                self._tracker.emit("card_present")
            elif not present and self._card_present:
                self._card_present = False
                self._tracker.emit("card_removed")


def _cmd_name(request: Request) -> str:
    command = request.command
    return command.name.lower() if command else f"{request.cmd:02x} {request.para:02x}"
