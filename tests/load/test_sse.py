"""A server-sent event reader that stops reading is cut off with a reason, not buffered for."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tests.load.conftest import gateway, sim_devices
from tests.load.kiosk import Opened, open_session, submit_print, wait_job, wait_until

EVENT_BUFFER = 16
# Jobs queued at once by the stuck session: each move of the queue is a position event per waiting
# job, so a batch stays below the buffer and a reader that keeps up would never overflow.
BATCH = 12
MAX_JOBS = 3000


async def _subscribe_raw(
    socket_path: Path, session: Opened
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the session's event stream on a bare connection whose reading the test controls."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    token = session.auth["Authorization"]
    writer.write(
        f"GET {session.path('/events')} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def _drain(reader: asyncio.StreamReader, sink: bytearray) -> None:
    while chunk := await reader.read(65536):
        sink += chunk


async def test_a_reader_that_never_reads_is_dropped_with_a_reason(state_dir: Path) -> None:
    devices = sim_devices(print_time=0, idcard=False).replace("baudrate = 115200", "baudrate = 921600")
    api = f"event_buffer = {EVENT_BUFFER}"
    async with gateway(state_dir, api=api, devices=devices) as gw, gw.client() as http:
        stuck_session, reading_session = await open_session(http), await open_session(http)
        stuck = gw.daemon.parts.sessions.get(stuck_session.id)
        assert stuck is not None
        streams = gw.daemon.running.ctx.streams
        stuck_reader, stuck_writer = await _subscribe_raw(gw.socket_path, stuck_session)
        await wait_until(lambda: _true(len(streams) == 1), what="the stuck stream subscribing")
        (stuck_sub,) = streams
        live_reader, live_writer = await _subscribe_raw(gw.socket_path, reading_session)
        await wait_until(lambda: _true(len(streams) == 2), what="the reading stream subscribing")
        (live_sub,) = streams - {stuck_sub}
        received = bytearray()
        draining = asyncio.create_task(_drain(live_reader, received))
        try:
            # The stuck session prints: its job events are for it alone, while the printer's state
            # events (busy, online) go to every session, the reading one included.
            jobs = 0
            while stuck_sub.closed_reason is None and jobs < MAX_JOBS:
                batch = [await submit_print(http, stuck_session) for _ in range(BATCH)]
                await wait_job(http, stuck_session, batch[-1]["job"], poll=0.01)
                jobs += BATCH
                assert stuck_sub.queue.qsize() <= EVENT_BUFFER
            assert stuck_sub.closed_reason is not None, f"still subscribed after {jobs} jobs"
            assert stuck_sub.closed_reason.startswith("slow_consumer")
            assert stuck.hub.subscribers == 0, "the hub still feeds the dropped reader"
            assert live_sub.closed_reason is None, "a reader that keeps up was dropped too"

            # When the stuck reader wakes up it learns why its stream ended.
            seen = b""
            async with asyncio.timeout(15):
                while b"event: stream_closed" not in seen:
                    chunk = await stuck_reader.read(65536)
                    assert chunk, "the stream ended without saying why"
                    seen += chunk
            assert b"slow_consumer" in seen.split(b"event: stream_closed", 1)[1]
            await wait_until(
                lambda: _true(streams == {live_sub}), what="the stuck stream's handler letting go"
            )
            assert received.count(b"\nevent: state") >= 2 * jobs - 1
        finally:
            draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await draining
            for writer in (stuck_writer, live_writer):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()


async def _true(value: bool) -> bool:
    return value
