"""Opening a serial port (path or pyserial URL) and keeping it open: reconnect with capped backoff."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import serial
import serial_asyncio_fast
import structlog

from drivers.backoff import Backoff, Jitter
from drivers.base import DeviceState, DeviceUnavailable, DriverError, StatusTracker
from drivers.serialio.threaded import open_threaded

log = structlog.get_logger(__name__)


class LinkProtocol(asyncio.Protocol):
    """Base of a device's asyncio protocol: owns the transport, reports loss once, never raises
    from data_received."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        # Set by SerialLink: runs first in connection_lost, so the state says no_device
        # before any failed request's caller wakes up.
        self.on_lost: Callable[[BaseException | None], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.bytes_received(data)
        except Exception:  # a protocol bug must not kill the transport's reader
            log.exception("protocol_error", device=self.device, nbytes=len(data))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        reason = f"{type(exc).__name__}: {exc}" if exc else "closed"
        if self.on_lost is not None:
            try:
                self.on_lost(exc)
            except Exception:
                log.exception("on_lost_failed", device=self.device)
        self.fail_pending(
            DeviceUnavailable(
                f"{self.device}: connection lost ({reason})",
                device=self.device,
                state=DeviceState.NO_DEVICE,
            )
        )
        if not self.lost.done():
            self.lost.set_result(exc)

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        """Send bytes now; DeviceUnavailable when the port is gone."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise DeviceUnavailable(
                f"{self.device}: port not open", device=self.device, state=DeviceState.NO_DEVICE
            )
        transport.write(data)

    async def drain(self, *, timeout: float) -> None:
        """Wait until the transport's own write buffer is empty (bytes handed to the OS)."""
        async with asyncio.timeout(timeout):
            # Transports expose no "buffer empty" event; a short poll is cheap and bounded.
            while (transport := self.transport) is not None and transport.get_write_buffer_size():  # noqa: ASYNC110
                await asyncio.sleep(0.002)

    def bytes_received(self, data: bytes) -> None:
        """Subclasses parse bytes here; raising is logged, not propagated."""
        raise NotImplementedError

    def fail_pending(self, exc: DriverError) -> None:
        """Subclasses fail every waiting request with `exc`."""
        raise NotImplementedError


P = TypeVar("P", bound=LinkProtocol)


RFC2217 = "rfc2217://"


def _is_url(port: str) -> bool:
    return "://" in port


def _open_error(device: str, port: str, err: BaseException) -> DeviceUnavailable:
    missing = isinstance(err, FileNotFoundError | ConnectionRefusedError) or (
        isinstance(err, OSError) and err.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO)
    )
    text = str(err)
    # pyserial wraps these in SerialException text (a path gone; a device server not listening).
    if isinstance(err, serial.SerialException) and ("No such file" in text or "Connection refused" in text):
        missing = True
    state = DeviceState.NO_DEVICE if missing else DeviceState.OFFLINE
    if getattr(err, "errno", None) == errno.EPERM and os.environ.get("INVOCATION_ID"):
        # Under systemd (which sets INVOCATION_ID) EPERM on open is the device cgroup filter of
        # DevicePolicy=/DeviceAllow=; a file permission problem would be EACCES.
        text += (
            "; the service's device policy (DeviceAllow= in edge-gateway.service) does not allow "
            f"this device: add `DeviceAllow={_device_class(port)} rw` in a drop-in "
            "(systemctl edit edge-gateway.service)"
        )
    return DeviceUnavailable(f"cannot open {port}: {text}", device=device, state=state)


def _device_class(port: str) -> str:
    """`char-NAME` for a character device's major as /proc/devices names it, else `char-CLASS`."""
    try:
        st = os.stat(port)
        with open("/proc/devices", encoding="ascii") as table:
            lines = table.read().split("Block devices:")[0].splitlines()
    except OSError:
        return "char-CLASS"
    if not stat.S_ISCHR(st.st_mode):
        return "char-CLASS"
    major = str(os.major(st.st_rdev))
    # A major may carry several names (4: tty, ttyS): offer each; /dev/... aliases are not classes.
    names = [
        f"char-{name}"
        for number, _, name in (line.strip().partition(" ") for line in lines)
        if number == major and name and not name.startswith("/")
    ]
    return " rw` or `DeviceAllow=".join(names) if names else "char-CLASS"


async def open_port(
    device: str,
    port: str,
    protocol_factory: Callable[[], P],
    *,
    baudrate: int,
    timeout: float = 2.0,
) -> tuple[asyncio.Transport, P]:
    """Open a path (`/dev/ttyUSB0`, `/dev/serial/by-id/...`) or a serial device server's URL:
    `socket://host:port` (raw TCP) or `rfc2217://host:port` (telnet with RFC 2217 port control)."""
    # A stat on a device node does not block; it tells "unplugged" from other open errors.
    if not _is_url(port) and not os.path.exists(port):  # noqa: ASYNC240
        raise DeviceUnavailable(f"{port} does not exist", device=device, state=DeviceState.NO_DEVICE)
    loop = asyncio.get_running_loop()
    transport: asyncio.BaseTransport
    protocol: asyncio.BaseProtocol
    try:
        async with asyncio.timeout(timeout):
            if port.startswith(RFC2217):
                protocol = protocol_factory()
                transport = await open_threaded(loop, protocol, port, baudrate=baudrate)
            else:
                transport, protocol = await serial_asyncio_fast.create_serial_connection(
                    loop, protocol_factory, port, baudrate=baudrate
                )
    except TimeoutError as err:
        raise DeviceUnavailable(
            f"opening {port} timed out", device=device, state=DeviceState.NO_DEVICE
        ) from err
    except (serial.SerialException, OSError, ValueError) as err:
        raise _open_error(device, port, err) from err
    assert isinstance(protocol, LinkProtocol) and isinstance(transport, asyncio.Transport)
    return transport, protocol  # type: ignore[return-value]


class SerialLink(Generic[P]):
    """Keeps one port open for a device: opens with backoff, notices loss, reopens by itself.

    On loss, the protocol fails pending work at once and the state goes to no_device;
    `on_up` runs after every (re)open to check the device and set its state.
    """

    def __init__(
        self,
        *,
        device: str,
        port: str,
        baudrate: int,
        tracker: StatusTracker,
        protocol_factory: Callable[[], P],
        on_up: Callable[[P], Awaitable[None]],
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
        open_timeout: float = 2.0,
    ) -> None:
        self.device = device
        self.port = port
        self.baudrate = baudrate
        self._tracker = tracker
        self._factory = protocol_factory
        self._on_up = on_up
        # Exponential from backoff_initial plus up to backoff_initial of jitter: at most backoff_max
        # (or twice backoff_initial when that is more).
        self._backoff = Backoff(
            first=backoff_initial,
            cap=max(backoff_initial, backoff_max - backoff_initial),
            jitter=Jitter.ADD_FIRST,
        )
        self._open_timeout = open_timeout
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self.protocol: P | None = None
        self.connects = 0
        self.outages = 0

    @property
    def connected(self) -> bool:
        return self.protocol is not None and self.protocol.connected

    def require(self) -> P:
        """The live protocol, or DeviceUnavailable carrying the device's current state."""
        proto = self.protocol
        if proto is None or not proto.connected:
            status = self._tracker.status
            state = status.state if not status.state.usable else DeviceState.NO_DEVICE
            raise DeviceUnavailable(
                f"{self.device} unavailable: {status.reason}", device=self.device, state=state
            )
        return proto

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"serial-link-{self.device}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_transport()

    async def _drop_transport(self) -> None:
        transport, self._transport = self._transport, None
        proto, self.protocol = self.protocol, None
        if transport is not None:
            transport.close()
        if proto is not None and not proto.lost.done():
            try:
                async with asyncio.timeout(2.0):
                    await asyncio.shield(proto.lost)
            except TimeoutError:
                log.warning("port_close_slow", device=self.device, port=self.port)

    async def _run(self) -> None:
        while True:
            proto = await self._open_with_backoff()
            self.connects += 1
            try:
                await self._on_up(proto)
            except DriverError as err:
                # The device opened but did not check out; its state says why, and the
                # driver's own health loop keeps checking.
                log.warning("device_check_failed", device=self.device, error=str(err))
            except Exception:
                log.exception("device_check_crashed", device=self.device)
            await asyncio.shield(proto.lost)
            self.protocol = None
            self._transport = None

    def _mark_lost(self, exc: BaseException | None) -> None:
        if self._task is None:
            return  # closing on purpose
        self.outages += 1
        reason = f"{type(exc).__name__}: {exc}" if exc else "port closed by peer"
        self._tracker.record_error(reason)
        self._tracker.set(DeviceState.NO_DEVICE, f"port lost: {reason}")
        log.warning("port_lost", device=self.device, port=self.port, reason=reason)

    def _make_protocol(self) -> P:
        proto = self._factory()
        proto.on_lost = self._mark_lost
        return proto

    async def _open_with_backoff(self) -> P:
        """Open the port, trying again after every failure (whatever it is) with capped backoff."""
        first_failure_at: float | None = None
        attempts = 0
        while True:
            attempts += 1
            try:
                transport, proto = await open_port(
                    self.device,
                    self.port,
                    self._make_protocol,
                    baudrate=self.baudrate,
                    timeout=self._open_timeout,
                )
            except Exception as err:  # a surprise in open is still no reason to stop trying
                self._note_open_failure(err, attempts, first=first_failure_at is None)
                if first_failure_at is None:
                    first_failure_at = time.monotonic()
                await asyncio.sleep(self._backoff.wait(attempts))
                continue
            self._transport = transport
            self.protocol = proto
            # connection_made runs on the next loop turn; the protocol is usable after it.
            await asyncio.sleep(0)
            if first_failure_at is not None:
                log.info(
                    "port_reopened",
                    device=self.device,
                    attempts=attempts,
                    down_s=round(time.monotonic() - first_failure_at, 3),
                )
            return proto

    def _note_open_failure(self, err: Exception, attempt: int, *, first: bool) -> None:
        """The state says why the port is not open; the first failure of an outage is a warning."""
        if isinstance(err, DeviceUnavailable):
            self._tracker.set(err.state, str(err))
        if first:
            log.warning("port_open_failed", device=self.device, port=self.port, error=str(err))
        else:
            log.debug("port_open_retry", device=self.device, attempt=attempt)
