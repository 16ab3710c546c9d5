"""PC/SC card reader driver (`pcsc`): social security, bank and staff cards through pcscd.

pyscard's low-level `smartcard.scard` API is used, not its high-level objects: every context
and card handle is released explicitly (no `__del__` surprises when pcscd dies), and each call
returns PC/SC's own code, which maps one-to-one onto our errors. All PC/SC calls on a context
run on one worker thread that owns that context; results come back to the loop through
`call_soon_threadsafe`. A thread stuck in pcscd (a mute card) is abandoned with its context
and a fresh worker takes over, so one bad card cannot wedge the reader.

Commands follow the protocol SCardConnect negotiated: under T=0 a case 4 command goes without
Le and its data comes with 61xx + GET RESPONSE (apdu.py). A transmit failing with "transaction
failed" (0x80100016) is a removal only if pcscd then sees the card gone; with the card still in
the reader it is `TransactionFailed`, and a case 4 command is retried once without Le.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from drivers.backoff import Backoff, Jitter
from drivers.base import DeviceState, DeviceStatus, Listener, StatusTracker
from drivers.cardreader import apdu
from drivers.cardreader.bankcard import find_payment_application
from drivers.cardreader.errors import (
    ApduError,
    CardReaderError,
    CardRemoved,
    CardTimeout,
    CardUnresponsive,
    NoCardPresented,
    PcscdUnavailable,
    ProtocolViolation,
    ReaderFailure,
    ReaderUnavailable,
    TransactionFailed,
    WrongCard,
)
from drivers.cardreader.records import EF05, EF06, BankCardInfo, SocialSecurityCard
from drivers.cardreader.sscard import read_social_security_items

log = structlog.get_logger(__name__)

T = TypeVar("T")

PYSCARD_MISSING = (
    "pyscard not installed (apt-get install -y pcscd libpcsclite-dev swig; pip install 'edge-gateway[pcsc]')"
)
_MAX_BACKOFF = 2.0
# SCardStatus card states (pcsclite.h); pyscard does not export them.
_CARD_ABSENT = 0x0002
_CARD_PRESENT = 0x0004
_CLOSE_WAIT = 1.0
# pcscd polls card presence every 0.4 s: a removal shows up within this after a failed transmit.
_REMOVAL_SETTLE = 0.6


def _load_scard() -> Any | None:
    """pyscard's low-level module, or None when the optional dependency is absent."""
    try:
        from smartcard import scard
    except ImportError:
        return None
    return scard


@dataclass(frozen=True, slots=True)
class _Poll:
    reader: str | None
    present: bool = False
    mute: bool = False
    atr: bytes = b""


def _pick_reader(readers: list[str], wanted: str) -> str | None:
    """The configured reader: exact name, else the first whose name starts with it; "" = first."""
    if not readers:
        return None
    if not wanted:
        return readers[0]
    if wanted in readers:
        return wanted
    return next((r for r in readers if r.startswith(wanted)), None)


class _PcscSession:
    """A PC/SC context and at most one card handle; its methods run on the worker thread only."""

    def __init__(self, scard: Any, device: str) -> None:
        self._s = scard
        self._device = device
        self._context: int | None = None
        self._handle: int | None = None
        self._protocol = 0
        self._reader: str | None = None
        s = scard
        self._service_down = {
            s.SCARD_E_NO_SERVICE,
            s.SCARD_E_SERVICE_STOPPED,
            s.SCARD_E_INVALID_HANDLE,
            s.SCARD_F_COMM_ERROR,
        }
        # Right after a removal pcscd answers either of the first two (protocols.md).
        self._removed = {
            s.SCARD_E_NOT_TRANSACTED,
            s.SCARD_W_REMOVED_CARD,
            s.SCARD_E_NO_SMARTCARD,
            s.SCARD_W_RESET_CARD,
        }
        self._unresponsive = {s.SCARD_W_UNRESPONSIVE_CARD, s.SCARD_W_UNPOWERED_CARD}
        self._reader_gone = {s.SCARD_E_UNKNOWN_READER, s.SCARD_E_READER_UNAVAILABLE}

    def _error(self, hr: int, what: str) -> CardReaderError:
        message = f"{what}: {self._s.SCardGetErrorMessage(hr)} (0x{hr & 0xFFFFFFFF:08X})"
        if hr in self._service_down:
            return PcscdUnavailable(message, device=self._device, state=DeviceState.NO_DEVICE)
        if hr in self._removed:
            return CardRemoved(f"card removed during the read ({message})", device=self._device)
        if hr in self._unresponsive:
            return CardUnresponsive(f"card does not answer ({message})", device=self._device)
        if hr in self._reader_gone:
            return ReaderUnavailable(message, device=self._device, state=DeviceState.NO_DEVICE)
        return ReaderFailure(message, device=self._device, code=hr)

    def _ensure_context(self) -> int:
        if self._context is None:
            hr, context = self._s.SCardEstablishContext(self._s.SCARD_SCOPE_USER)
            if hr != self._s.SCARD_S_SUCCESS:
                raise self._error(hr, "establish context")
            self._context = context
        return self._context

    def poll(self, wanted: str) -> _Poll:
        """Which reader is ours and whether a card sits in it, without waiting."""
        s = self._s
        context = self._ensure_context()
        hr, readers = s.SCardListReaders(context, [])
        if hr == s.SCARD_E_NO_READERS_AVAILABLE:
            readers = []
        elif hr != s.SCARD_S_SUCCESS:
            raise self._error(hr, "list readers")
        reader = _pick_reader(list(readers), wanted)
        if reader is None:
            return _Poll(None)
        hr, states = s.SCardGetStatusChange(context, 0, [(reader, s.SCARD_STATE_UNAWARE)])
        if hr in self._reader_gone:
            return _Poll(None)
        if hr != s.SCARD_S_SUCCESS:
            raise self._error(hr, "get status")
        _, event_state, atr = states[0]
        return _Poll(
            reader,
            present=bool(event_state & s.SCARD_STATE_PRESENT),
            mute=bool(event_state & s.SCARD_STATE_MUTE),
            atr=bytes(atr),
        )

    def connect(self, reader: str) -> None:
        """Open a shared connection to the card in `reader` (T=0 or T=1)."""
        s = self._s
        context = self._ensure_context()
        self.disconnect()
        hr, handle, protocol = s.SCardConnect(
            context, reader, s.SCARD_SHARE_SHARED, s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1
        )
        if hr != s.SCARD_S_SUCCESS:
            raise self._error(hr, "connect")
        self._handle, self._protocol, self._reader = handle, protocol, reader

    @property
    def t0(self) -> bool:
        """Whether the connection negotiated T=0 (case 4 commands then go without Le)."""
        return bool(self._protocol == self._s.SCARD_PROTOCOL_T0)

    @property
    def protocol_name(self) -> str:
        """ "T=0", "T=1" or "raw": for logs and results."""
        s = self._s
        return {s.SCARD_PROTOCOL_T0: "T=0", s.SCARD_PROTOCOL_T1: "T=1"}.get(self._protocol, "raw")

    def _card_stays(self) -> bool:
        """After a failed transmit: True if pcscd still sees the same card once its poll has run."""
        s = self._s
        if self._context is None or self._reader is None:
            return False
        hr, states = s.SCardGetStatusChange(self._context, 0, [(self._reader, s.SCARD_STATE_UNAWARE)])
        if hr != s.SCARD_S_SUCCESS or not states[0][1] & s.SCARD_STATE_PRESENT:
            return False
        known = states[0][1] & ~s.SCARD_STATE_CHANGED
        wait_ms = int(_REMOVAL_SETTLE * 1000)
        hr, states = s.SCardGetStatusChange(self._context, wait_ms, [(self._reader, known)])
        # No change within a full poll period: the card is still there, untouched.
        return bool(hr == s.SCARD_E_TIMEOUT)

    def _send(self, command: bytes) -> bytes:
        s = self._s
        if self._handle is None:
            raise CardRemoved("no card connection", device=self._device)
        hr, response = s.SCardTransmit(self._handle, self._protocol, list(command))
        if hr == s.SCARD_E_NOT_TRANSACTED and self._card_stays():
            raise TransactionFailed(
                f"reader could not complete {apdu.describe(command)} (transaction failed, "
                f"0x{hr & 0xFFFFFFFF:08X}); the card is still in the reader",
                device=self._device,
                code=hr,
            )
        if hr != s.SCARD_S_SUCCESS:
            raise self._error(hr, f"transmit {apdu.describe(command)}")
        if not response:
            # A card always answers with at least SW1 SW2; vpcd returns nothing when the card
            # vanished mid-command, before pcscd's presence poll has noticed the removal.
            raise CardRemoved("card stopped answering (removed)", device=self._device)
        if len(response) < 2:
            raise ProtocolViolation(
                f"response of {len(response)} byte to {apdu.describe(command)}",
                device=self._device,
            )
        return bytes(response)

    def command(self, command: bytes) -> bytes:
        """One logical command shaped for the negotiated protocol, 61xx/6Cxx handled; data on 9000."""
        return apdu.transmit(self._send, command, device=self._device, t0=self.t0)

    def disconnect(self) -> None:
        """Drop the card handle, if any; errors are moot since the handle is gone either way."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self._s.SCardDisconnect(handle, self._s.SCARD_LEAVE_CARD)

    def release(self) -> None:
        """Drop the handle and the context; never raises."""
        with contextlib.suppress(Exception):
            self.disconnect()
        context, self._context = self._context, None
        if context is not None:
            with contextlib.suppress(Exception):
                self._s.SCardReleaseContext(context)


_Job = tuple[Callable[[], Any], "asyncio.Future[Any] | None"]


class _Worker:
    """One daemon thread running PC/SC jobs in order for one session."""

    def __init__(self, loop: asyncio.AbstractEventLoop, session: _PcscSession, name: str) -> None:
        self._loop = loop
        self.session = session
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Daemon: a thread stuck on a mute card must not keep the process alive.
        self._thread = threading.Thread(target=self._run, name=f"pcsc-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, future))
        return future

    def post(self, fn: Callable[[], object]) -> None:
        """Queue a job nobody waits for (its errors are dropped)."""
        self._jobs.put((fn, None))

    def stop(self) -> asyncio.Future[None]:
        """Release the session after the queued jobs, then end the thread."""
        future = self.submit(self.session.release)
        self._jobs.put(None)
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            try:
                result = fn()
            except BaseException as err:  # handed to the awaiting coroutine
                self._deliver(future, None, err)
            else:
                self._deliver(future, result, None)

    def _deliver(
        self, future: asyncio.Future[Any] | None, result: object, error: BaseException | None
    ) -> None:
        if future is None:
            return

        def settle() -> None:
            if future.done():  # cancelled by a timeout meanwhile
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            self._loop.call_soon_threadsafe(settle)


class _CardLink:
    """Command channel to the connected card for one read."""

    def __init__(self, reader: PcscCardReader, worker: _Worker) -> None:
        self._reader = reader
        self._worker = worker
        self.answered = 0

    @property
    def protocol(self) -> str:
        """The protocol the connection negotiated ("T=0" / "T=1")."""
        return self._worker.session.protocol_name

    async def command(self, command: bytes) -> bytes:
        session = self._worker.session
        data = await self._reader._call(self._worker, functools.partial(session.command, command))
        self.answered += 1
        return data

    def close(self) -> None:
        # Queued behind any command still running, so it cannot cut one short.
        self._worker.post(self._worker.session.disconnect)


class PcscCardReader:
    """A PC/SC reader: card events, and typed reads of social security, bank and staff cards."""

    driver = "pcsc"

    def __init__(
        self,
        name: str,
        *,
        reader: str = "",
        poll_interval: float = 0.3,
        apdu_timeout: float = 3.0,
        card_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.reader = reader
        self._poll_interval = poll_interval
        # After the n-th failed poll: poll_interval * 2**min(n, 5), at most _MAX_BACKOFF, +-20 %.
        self._backoff = Backoff(
            first=2 * poll_interval, cap=min(_MAX_BACKOFF, 32 * poll_interval), jitter=Jitter.SPREAD
        )
        self._apdu_timeout = apdu_timeout
        self._card_timeout = card_timeout
        self._tracker = StatusTracker(name, DeviceState.OFFLINE)
        self._scard: Any | None = None
        self._worker: _Worker | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._reader_name: str | None = None
        self._card_present = False
        self._changed = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._closed = False
        self._failures = 0
        self._polled = asyncio.Event()

    @property
    def status(self) -> DeviceStatus:
        return self._tracker.status

    @property
    def card_present(self) -> bool:
        """Whether the last poll saw a usable card in the reader."""
        return self._card_present

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._tracker.subscribe(listener)

    async def start(self) -> None:
        """Start polling pcscd; returns at once, also when pyscard or pcscd is missing."""
        if self._supervisor is not None:
            return
        self._closed = False
        self._scard = _load_scard()
        if self._scard is None:
            self._tracker.set(DeviceState.NO_DEVICE, PYSCARD_MISSING)
            log.warning("pcsc_unavailable", device=self.name, reason=PYSCARD_MISSING)
            return
        self._supervisor = asyncio.create_task(self._supervise(), name=f"pcsc-{self.name}")

    async def close(self) -> None:
        """Stop polling, wake waiting reads, release the PC/SC context."""
        self._closed = True
        self._notify()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        worker, self._worker = self._worker, None
        if worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.stop(), _CLOSE_WAIT)
        self._reader_name = None
        self._card_present = False
        self._tracker.set(DeviceState.OFFLINE, "closed")

    async def probe(self, *, timeout: float | None = None) -> DeviceStatus:
        """Poll pcscd now and return the resulting status."""
        if self._scard is None or self._closed:
            return self.status
        with contextlib.suppress(CardReaderError):
            await self._poll(within=timeout)
        return self.status

    async def read_social_security(self, *, timeout: float | None = None) -> SocialSecurityCard:
        """Wait for a card (within timeout) and read EF05 and EF06 of the social security app."""
        return await self._read("sscard", self._read_ssc, timeout)

    async def read_bank_card(self, *, timeout: float | None = None) -> BankCardInfo:
        """Wait for a card; its preferred payment application via PPSE, PSE or known AIDs (`source`)."""
        return await self._read("bank", self._read_bank, timeout)

    async def read_card_id(self, *, timeout: float | None = None) -> str:
        """Wait for a card and return its identifier (UID, hex) for the staff-card mapping."""
        return await self._read("staff", self._read_uid, timeout)

    # --- reads ---

    async def _read(self, kind: str, body: Callable[[_CardLink], Awaitable[T]], within: float | None) -> T:
        limit = self._card_timeout if within is None else within
        if self._supervisor is not None and not self._polled.is_set():
            # Just started: let the first poll decide the state instead of failing on "starting".
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._polled.wait(), min(limit, self._apdu_timeout))
        self._check_usable()
        started = time.monotonic()
        waiting = True
        try:
            async with asyncio.timeout(limit), self._read_lock:
                while True:
                    await self._wait_card()
                    waiting = False
                    link: _CardLink | None = None
                    try:
                        link = await self._connect()
                        result = await body(link)
                        break
                    except CardRemoved:
                        # Gone before it answered anything: pcscd had not yet seen a removal
                        # (a quick swap). That is "no card yet", not a read cut short.
                        if link is not None and link.answered:
                            raise
                        self._set_card(False)
                        waiting = True
                    finally:
                        if link is not None:
                            link.close()
        except CardReaderError as err:
            if isinstance(err, CardRemoved):
                self._set_card(False)
            self._tracker.record_error(str(err))
            log.info("card_read_failed", device=self.name, kind=kind, error=type(err).__name__)
            raise
        except TimeoutError:
            if waiting:
                status = self.status
                if not status.state.usable:
                    raise ReaderUnavailable(
                        f"card reader {status.state.value}: {status.reason}",
                        device=self.name,
                        state=status.state,
                    ) from None
                raise NoCardPresented(f"no card presented within {limit:g}s", device=self.name) from None
            self._tracker.record_error("read timed out")
            raise CardTimeout(f"card read not done within {limit:g}s", device=self.name) from None
        self._tracker.record_success()
        log.info("card_read", device=self.name, kind=kind, ms=round((time.monotonic() - started) * 1000))
        return result

    def _check_usable(self) -> None:
        if self._closed:
            raise ReaderUnavailable("card reader closed", device=self.name, state=DeviceState.OFFLINE)
        status = self.status
        if self._scard is None or self._supervisor is None or not status.state.usable:
            raise ReaderUnavailable(
                f"card reader {status.state.value}: {status.reason}",
                device=self.name,
                state=status.state,
            )

    async def _wait_card(self) -> None:
        while True:
            if self._closed:
                raise ReaderUnavailable("card reader closed", device=self.name, state=DeviceState.OFFLINE)
            if self._card_present and self._reader_name is not None:
                return
            await self._changed.wait()

    async def _connect(self) -> _CardLink:
        worker = self._ensure_worker()
        reader = self._reader_name
        if reader is None:
            raise ReaderUnavailable("reader gone", device=self.name, state=DeviceState.NO_DEVICE)
        await self._call(worker, functools.partial(worker.session.connect, reader))
        return _CardLink(self, worker)

    async def _read_ssc(self, link: _CardLink) -> SocialSecurityCard:
        try:
            await link.command(apdu.select_aid(apdu.SSC_AID))
        except ApduError as err:
            raise WrongCard(
                "not a social security card (no social security application)",
                device=self.name,
                expected="sscard",
            ) from err
        read = await read_social_security_items(link.command)
        card = SocialSecurityCard.from_items(read.items)
        log.info(
            "sscard_addressing",
            device=self.name,
            protocol=link.protocol,
            ef05=read.mode_summary(EF05),
            ef06=read.mode_summary(EF06),
            commands=read.apdus + 1,
        )
        return card

    async def _read_bank(self, link: _CardLink) -> BankCardInfo:
        return await find_payment_application(link.command, device=self.name)

    async def _read_uid(self, link: _CardLink) -> str:
        try:
            uid = await link.command(apdu.get_uid())
        except ApduError as err:
            raise WrongCard("card has no readable identifier", device=self.name, expected="staff") from err
        if not 4 <= len(uid) <= 10:
            raise ProtocolViolation(f"card identifier of {len(uid)} bytes", device=self.name)
        return uid.hex().upper()

    # --- supervision ---

    async def _supervise(self) -> None:
        while True:
            try:
                await self._poll()
            except CardReaderError as err:
                self._failures += 1
                if self._failures == 1:
                    log.warning("pcsc_poll_failed", device=self.name, error=str(err))
                else:
                    log.debug("pcsc_poll_failed", device=self.name, error=str(err))
                await asyncio.sleep(self._backoff.wait(self._failures))
                continue
            if self._failures:
                log.info("pcsc_recovered", device=self.name, failures=self._failures)
                self._failures = 0
            await asyncio.sleep(self._poll_interval)

    async def _poll(self, *, within: float | None = None) -> None:
        worker = self._ensure_worker()
        try:
            result = await self._call(worker, functools.partial(worker.session.poll, self.reader), within)
        except ReaderUnavailable as err:
            if not isinstance(err, PcscdUnavailable):
                self._apply(_Poll(None))
            raise
        self._apply(result)

    async def _call(self, worker: _Worker, fn: Callable[[], T], within: float | None = None) -> T:
        """Run one job on the worker within the APDU timeout; a stuck worker is abandoned."""
        limit = self._apdu_timeout if within is None else within
        try:
            return await asyncio.wait_for(worker.submit(fn), limit)
        except PcscdUnavailable as err:
            self._drop_worker(worker)
            self._mark_down(f"pcscd not available ({err})")
            raise
        except TimeoutError:
            self._drop_worker(worker)
            raise CardTimeout(f"no answer within {limit:g}s", device=self.name) from None

    def _ensure_worker(self) -> _Worker:
        if self._scard is None:
            raise ReaderUnavailable(PYSCARD_MISSING, device=self.name, state=DeviceState.NO_DEVICE)
        if self._worker is None:
            session = _PcscSession(self._scard, self.name)
            self._worker = _Worker(asyncio.get_running_loop(), session, self.name)
        return self._worker

    def _drop_worker(self, worker: _Worker) -> None:
        if self._worker is worker:
            self._worker = None
        # Its release runs once the stuck job returns (e.g. when the card is pulled).
        worker.stop()

    def _mark_down(self, reason: str) -> None:
        self._polled.set()
        self._set_card(False)
        if self._reader_name is not None:
            self._tracker.emit("reader_unplugged", reader=self._reader_name)
            self._reader_name = None
        self._tracker.set(DeviceState.NO_DEVICE, reason)

    def _apply(self, poll: _Poll) -> None:
        self._polled.set()
        if poll.reader is None:
            self._set_card(False)
            if self._reader_name is not None:
                self._tracker.emit("reader_unplugged", reader=self._reader_name)
                self._reader_name = None
            reason = f"reader {self.reader!r} not found" if self.reader else "no PC/SC reader"
            self._tracker.set(DeviceState.NO_DEVICE, reason)
            self._notify()
            return
        if poll.reader != self._reader_name:
            if self._reader_name is not None:
                self._set_card(False)
                self._tracker.emit("reader_unplugged", reader=self._reader_name)
            self._reader_name = poll.reader
            self._tracker.emit("reader_plugged", reader=poll.reader)
        if poll.present and poll.mute:
            self._set_card(False)
            self._tracker.set(DeviceState.USER_ERROR, "card does not answer; take it out")
        else:
            self._tracker.set(DeviceState.ONLINE, "ready")
            self._set_card(poll.present, poll.atr)

    def _set_card(self, present: bool, atr: bytes = b"") -> None:
        if present == self._card_present:
            return
        self._card_present = present
        reader = self._reader_name or ""
        if present:
            self._tracker.emit("card_inserted", reader=reader, atr=atr.hex().upper())
        else:
            self._tracker.emit("card_removed", reader=reader)
        self._notify()

    def _notify(self) -> None:
        """Wake everything waiting for a card or reader change."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
