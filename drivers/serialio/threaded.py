"""An asyncio transport over a pyserial port that has no file descriptor (RFC 2217 serial servers).

pyserial's `rfc2217://` client keeps the telnet connection in its own reader thread and offers only
blocking `read`/`write`, so the selector-based transports cannot watch it. Here one thread reads and
hands bytes to the loop, another writes what the loop queued; a failed read or write is a lost
connection, reported once. Used for serial device servers such as ser2net in RFC 2217 mode.

pyserial waits for the server to acknowledge every SET_CONTROL (DTR/RTS); ser2net 4 does not, so an
open waits 3 s and fails with "timeout while waiting for option 'control'" (seen here with ser2net
4.3.11; the same fix in labgrid's serial driver, labgrid PR #367, and pyserial's URL handler docs:
`ign_set_control`). Kiosk peripherals use no modem lines, so the URL gets `ign_set_control` unless it
already has options. The read timeout is given at open: setting it later makes pyserial renegotiate
the whole port configuration with the server (pyserial issue #376).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Protocol

import serial

# How long one blocking read waits before checking whether the transport is closing.
READ_POLL_S = 0.05


class BlockingPort(Protocol):
    """What the transport needs of a pyserial port."""

    name: str | None
    is_open: bool

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, b: bytes, /) -> int | None: ...

    def close(self) -> None: ...


class ThreadedSerialTransport(asyncio.Transport):
    """Reader and writer threads around a blocking pyserial port."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, port: BlockingPort
    ) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._port = port
        self._closing = False
        self._lost = False
        self._pending = 0
        self._lock = threading.Lock()
        self._outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read_loop, name=f"serial-read-{port.name}", daemon=True)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"serial-write-{port.name}", daemon=True
        )
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._reader.start)
        loop.call_soon(self._writer.start)

    # asyncio.Transport ------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._port if name == "serial" else default

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        chunk = bytes(data)
        with self._lock:
            self._pending += len(chunk)
        self._outgoing.put(chunk)

    def get_write_buffer_size(self) -> int:
        with self._lock:
            return self._pending

    def close(self) -> None:
        self._shutdown(None)

    def abort(self) -> None:
        self._shutdown(None)

    # threads ----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while not self._closing:
                data = self._port.read(self._port.in_waiting or 1) if self._port.is_open else b""
                if data and not self._closing:
                    self._loop.call_soon_threadsafe(self._protocol.data_received, data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as err:
            # pyserial raises TypeError/AttributeError when the port is closed under a read.
            self._from_thread(err)

    def _write_loop(self) -> None:
        while True:
            chunk = self._outgoing.get()
            if chunk is None:
                return
            try:
                self._port.write(chunk)
            except (serial.SerialException, OSError) as err:
                self._from_thread(err)
                return
            with self._lock:
                self._pending -= len(chunk)

    def _from_thread(self, err: Exception) -> None:
        if not self._closing:
            self._loop.call_soon_threadsafe(self._shutdown, err)

    def _shutdown(self, err: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._outgoing.put(None)
        # Closing the port can wait on its telnet thread: off the loop, then report the loss.
        closing = self._loop.run_in_executor(None, self._port.close)
        closing.add_done_callback(lambda _f: self._protocol.connection_lost(err))


async def open_threaded(
    loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, url: str, *, baudrate: int
) -> ThreadedSerialTransport:
    """Open `url` (blocking, in a worker thread) and wrap it in a transport."""
    if "?" not in url:
        url += "?ign_set_control"
    port: BlockingPort = await loop.run_in_executor(
        None, lambda: serial.serial_for_url(url, baudrate=baudrate, timeout=READ_POLL_S)
    )
    return ThreadedSerialTransport(loop, protocol, port)
