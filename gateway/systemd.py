"""The systemd service protocol: sd_notify, the watchdog, socket activation (LISTEN_FDS)."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import structlog

from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET; does nothing when not run by systemd."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if not address:
            return
        # A leading "@" names an abstract socket (a leading NUL byte).
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram of `KEY=VALUE` lines; never raises (systemd may be gone)."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as err:
            log.warning("sd_notify_failed", error=str(err))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not requested."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 / 2 if value > 0 else None


def listen_sockets() -> list[socket.socket]:
    """Sockets handed over by systemd socket activation (LISTEN_PID/LISTEN_FDS), consumed once."""
    pid = os.environ.get("LISTEN_PID")
    count = os.environ.get("LISTEN_FDS")
    if not pid or not count or pid != str(os.getpid()):
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


class LoopMonitor:
    """Measures event-loop lag; the watchdog pings only while the loop is healthy."""

    def __init__(self, *, interval: float = 0.25) -> None:
        self.interval = interval
        self.lag = 0.0
        self.max_lag = 0.0
        self.last_tick = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-monitor")

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.lag = max(0.0, now - before - self.interval)
            self.max_lag = max(self.max_lag, self.lag)
            self.last_tick = now

    def healthy(self, limit: float = 1.0) -> bool:
        """Lag under `limit` and the monitor itself ran recently."""
        return self.lag < limit and time.monotonic() - self.last_tick < limit + self.interval

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)


class Watchdog:
    """Pings WATCHDOG=1 every WATCHDOG_USEC/2 while the loop monitor says the loop is healthy."""

    def __init__(self, notifier: Notifier, monitor: LoopMonitor, interval: float) -> None:
        self._notifier = notifier
        self._monitor = monitor
        self.interval = interval
        self.pings = 0
        self.last_ping = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.last_ping = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="watchdog")

    async def _run(self) -> None:
        while True:
            if self._monitor.healthy():
                self._notifier.watchdog()
                self.pings += 1
                self.last_ping = time.monotonic()
            else:
                log.warning("watchdog_ping_withheld", loop_lag_s=round(self._monitor.lag, 3))
            await asyncio.sleep(self.interval)

    def slack(self) -> float:
        """Seconds left before systemd would give up on us (WATCHDOG_USEC is twice the interval)."""
        return 2 * self.interval - (time.monotonic() - self.last_ping)

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
