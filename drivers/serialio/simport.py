"""The device side of a simulated port: a pseudo-terminal (stable symlink path) or a TCP listener.

Replies are paced at the line rate (8N1: ten bits a byte) so latency looks like the wire's.
Unplug closes the pty master and removes the symlink; replug makes a new pty and re-points
the same symlink, so a driver reopening the path it was given finds the device again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import tty
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

DataSink = Callable[[bytes], None]

_PACE_SLICE_S = 0.002


class SimEndpoint:
    """What a simulator needs from its port: start/stop, paced send, unplug/replug."""

    def __init__(self, on_data: DataSink, *, baudrate: int, pace: bool) -> None:
        self._on_data = on_data
        self.baudrate = baudrate
        self.pace = pace
        self._send_lock = asyncio.Lock()
        self.plugged = False

    @property
    def bytes_per_s(self) -> float:
        return self.baudrate / 10.0

    def wire_time(self, nbytes: int) -> float:
        """Seconds `nbytes` take on the line at this baud rate (8N1)."""
        return nbytes / self.bytes_per_s

    async def start(self) -> str:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def unplug(self) -> None:
        raise NotImplementedError

    async def replug(self) -> None:
        raise NotImplementedError

    async def send(self, data: bytes) -> None:
        """Write bytes as the device would, paced at the baud rate when `pace` is on."""
        async with self._send_lock:
            if not self.pace:
                await self._write(data)
                return
            loop = asyncio.get_running_loop()
            start = loop.time()
            rate = self.bytes_per_s
            step = max(1, int(rate * _PACE_SLICE_S))
            for offset in range(0, len(data), step):
                piece = data[offset : offset + step]
                # A slice leaves when its last byte would have finished arriving on a real line.
                delay = start + (offset + len(piece)) / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._write(piece)

    async def _write(self, data: bytes) -> None:
        raise NotImplementedError


class PtyEndpoint(SimEndpoint):
    """A pseudo-terminal; the driver opens `path`, a symlink to the current /dev/pts/N."""

    def __init__(self, on_data: DataSink, *, name: str, baudrate: int, pace: bool = True) -> None:
        super().__init__(on_data, baudrate=baudrate, pace=pace)
        self._name = name
        self._dir: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self.path = ""

    async def start(self) -> str:
        self._dir = tempfile.mkdtemp(prefix=f"edge-sim-{self._name}-")
        self.path = os.path.join(self._dir, self._name)
        self._plug()
        return self.path

    async def stop(self) -> None:
        self._unplug()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def unplug(self) -> None:
        self._unplug()

    async def replug(self) -> None:
        if not self.plugged:
            self._plug()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = f"{self.path}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)
        asyncio.get_running_loop().add_reader(master, self._readable)
        self.plugged = True

    def _unplug(self) -> None:
        self.plugged = False
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        master, self._master = self._master, None
        slave, self._slave = self._slave, None
        if master is not None:
            asyncio.get_running_loop().remove_reader(master)
            os.close(master)
        if slave is not None:
            # Our own slave fd keeps the master readable while the driver reopens its port.
            os.close(slave)

    def _readable(self) -> None:
        master = self._master
        if master is None:
            return
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        except OSError as err:
            log.debug("sim_pty_read_failed", port=self._name, error=str(err))
            return
        if data:
            self._on_data(data)

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            master = self._master
            if master is None:
                return  # unplugged mid-reply: the rest is lost, as on a real cable
            try:
                written = os.write(master, view)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(master, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(master)
                continue
            except OSError:
                return
            view = view[written:]


class TcpEndpoint(SimEndpoint):
    """A TCP listener on 127.0.0.1 (a network printer's port 9100); one client at a time."""

    def __init__(self, on_data: DataSink, *, baudrate: int, pace: bool = False, port: int = 0) -> None:
        super().__init__(on_data, baudrate=baudrate, pace=pace)
        self._port = port
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> str:
        await self._listen()
        self.url = f"socket://127.0.0.1:{self._port}"
        return self.url

    async def stop(self) -> None:
        await self._unplug()

    async def unplug(self) -> None:
        await self._unplug()

    async def replug(self) -> None:
        if not self.plugged:
            await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self._port, reuse_address=True)
        self._port = self._server.sockets[0].getsockname()[1]
        self.plugged = True

    async def _unplug(self) -> None:
        self.plugged = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        old, self._writer = self._writer, writer
        if old is not None:
            old.close()
        try:
            while data := await reader.read(4096):
                self._on_data(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            if self._writer is writer:
                self._writer = None
            writer.close()

    async def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
