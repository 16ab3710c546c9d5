"""Accepting API connections: peer uid checked at accept, a connection cap, a header timeout.

asyncio's own accept loop logs a traceback for every failed accept() and retries in a tight loop
once the open-file limit is reached, and aiohttp checks nothing before it parses a request. Here
the gateway accepts by itself: a peer whose uid is not in `api.allowed_uids` is closed at once
(SO_PEERCRED, the credentials of the connecting process, see unix(7)); the number of open
connections stays below the file limit, with room kept for allowed clients; a connection must
finish its first request head within `api.header_timeout_s`; and an accept() that fails for lack
of descriptors (EMFILE/ENFILE, see accept(2)) pauses accepting for a moment and is counted, not
logged once per attempt.

Sources: SO_PEERCRED returns a `struct ucred {pid, uid, gid}` of three ints holding the
credentials in effect at connect(2) (unix(7) and socket(7); Rust's std `os/unix/net/ucred.rs`
reads the same three fields on Linux). A failed accept() for lack of descriptors leaves the
connection queued, so the listener stays readable and a loop that just retries spins (libuv
issue joyent/libuv#690, vibe-d/eventcore#49); asyncio's own accept loop keeps going after such an
error and logs each attempt (python/cpython#151615).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import socket
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

import structlog

from gateway.ratelimit import Tally
from gateway.status import ConnectionStats

log = structlog.get_logger(__name__)

# Descriptors kept for the daemon's own files (SQLite and its WAL, devices, log files, the MQTT
# socket, pipes) when the connection cap is derived from the open-file limit.
FD_RESERVE: Final = 256
MIN_CONNECTIONS: Final = 16
# How many connections one readiness event may accept before other work gets the loop again.
ACCEPT_BATCH: Final = 64
_PEERCRED: Final = struct.Struct("3i")
_HEAD_END: Final = b"\r\n\r\n"


def open_file_limit() -> int:
    """The soft RLIMIT_NOFILE of this process (a large number when unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(configured: int, limit: int) -> int:
    """The connection cap: `configured` (0 = automatic), never closer to `limit` than FD_RESERVE."""
    ceiling = max(MIN_CONNECTIONS, limit - FD_RESERVE)
    return ceiling if configured <= 0 else min(configured, ceiling)


def socket_peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process that connected a Unix socket (SO_PEERCRED); None for other families."""
    if sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return int(uid)


@dataclass(frozen=True)
class Limits:
    """The connection limits in force (from [api], with the cap resolved against the file limit)."""

    max_connections: int
    reserved_connections: int
    header_timeout_s: float
    accept_retry_s: float = 0.5
    log_interval_s: float = 60.0


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: counts it, and closes it if no head comes in time."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol, privileged: bool) -> None:
        self.guard = guard
        self.inner = inner
        self.privileged = privileged
        self.transport: asyncio.Transport | None = None
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.limits.header_timeout_s, self._head_overdue)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            window = self._tail + data
            if _HEAD_END in window:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = window[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.guard._closed(self)
        self.inner.connection_lost(exc)

    def _head_overdue(self) -> None:
        self._timer = None
        self.guard.header_timeouts += 1
        if self.transport is not None:
            self.transport.abort()


class ConnectionGuard:
    """Accepts on listening sockets and admits connections to aiohttp only within the limits."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limits: Limits,
        *,
        allowed_uids: Callable[[], Collection[int]],
    ) -> None:
        self.factory = factory
        self.limits = limits
        self.allowed_uids = allowed_uids
        self.accepted = 0
        self.header_timeouts = 0
        self.refused: dict[str, int] = {"peer": 0, "full": 0}
        self.accept_errors = 0
        self._own_uid = os.geteuid()
        self._open: set[_Guarded] = set()
        self._listening: list[socket.socket] = []
        self._paused: set[int] = set()
        self._pending: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._flush: asyncio.TimerHandle | None = None
        self.peer_log = Tally(self._report_refused, interval_s=limits.log_interval_s)
        self.error_log = Tally(self._report_accept_error, interval_s=limits.log_interval_s)
        # Every tally flushed on this guard's timer (the API's HTTP logger adds its own).
        self.tallies: list[Tally] = [self.peer_log, self.error_log]

    @property
    def open(self) -> int:
        return len(self._open)

    def listen(self, sock: socket.socket) -> None:
        """Start accepting on an already listening socket."""
        sock.setblocking(False)
        self._listening.append(sock)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable, sock)
        if self._flush is None:
            self._schedule_flush()

    def close(self) -> None:
        """Stop accepting (open connections are left to aiohttp's shutdown)."""
        loop = asyncio.get_running_loop()
        for sock in self._listening:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
        self._listening.clear()
        for handle in [*self._timers, *([self._flush] if self._flush else [])]:
            handle.cancel()
        self._timers.clear()
        self._flush = None
        for tally in self.tallies:
            tally.flush(force=True)

    def stats(self) -> ConnectionStats:
        return ConnectionStats(
            open=self.open,
            max=self.limits.max_connections,
            reserved=self.limits.reserved_connections,
            accepted=self.accepted,
            refused=dict(self.refused),
            header_timeouts=self.header_timeouts,
            accept_errors=self.accept_errors,
        )

    # ------------------------------------------------------------------ accepting

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as err:
                self._accept_failed(sock, err)
                return
            self._admit(conn)

    def _accept_failed(self, sock: socket.socket, err: OSError) -> None:
        """Out of descriptors (or another accept error): pause this socket briefly, count, log rarely."""
        self.accept_errors += 1
        name = errno.errorcode.get(err.errno or 0, "error")
        self.error_log.record(name, error=err.strerror or str(err), open=self.open)
        fd = sock.fileno()
        if fd in self._paused or fd < 0:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        self._paused.add(fd)

        def resume() -> None:
            self._timers.discard(handle)
            self._paused.discard(fd)
            if sock in self._listening:
                loop.add_reader(fd, self._on_readable, sock)

        handle = loop.call_later(self.limits.accept_retry_s, resume)
        self._timers.add(handle)

    def _admit(self, conn: socket.socket) -> None:
        try:
            uid = socket_peer_uid(conn)
        except OSError:
            conn.close()
            return
        allowed = self.allowed_uids()
        if allowed and uid is not None and uid not in allowed:
            self._refuse(conn, "peer", uid)
            return
        privileged = uid is not None and (uid in allowed or uid in (0, self._own_uid))
        room = self.limits.max_connections - (0 if privileged else self.limits.reserved_connections)
        if self.open >= room:
            self._refuse(conn, "full", uid)
            return
        self.accepted += 1
        conn.setblocking(False)
        protocol = _Guarded(self, self.factory(), privileged)
        self._open.add(protocol)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._connect(conn, protocol))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _connect(self, conn: socket.socket, protocol: _Guarded) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: protocol, sock=conn)
        except (OSError, RuntimeError) as err:
            self._open.discard(protocol)
            conn.close()
            log.debug("api_connection_setup_failed", error=str(err))

    def _refuse(self, conn: socket.socket, reason: str, uid: int | None) -> None:
        # SO_LINGER 0: the close sends a reset and frees everything now (no FIN_WAIT state kept).
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self.refused[reason] += 1
        kind = f"{reason}:{uid}" if reason == "peer" else reason
        self.peer_log.record(kind, reason=reason, uid=uid, open=self.open)

    def _closed(self, protocol: _Guarded) -> None:
        self._open.discard(protocol)

    # ------------------------------------------------------------------ reporting

    def _schedule_flush(self) -> None:
        loop = asyncio.get_running_loop()
        self._flush = loop.call_later(self.limits.log_interval_s, self._flush_logs)

    def _flush_logs(self) -> None:
        for tally in self.tallies:
            tally.flush()
        self._schedule_flush()

    def _report_refused(self, kind: str, count: int, fields: dict[str, Any], first: bool) -> None:
        reason = fields.get("reason", kind)
        text = (
            f"uid {fields.get('uid')} is not in api.allowed_uids"
            if reason == "peer"
            else f"{self.limits.max_connections} connections are open (api.max_connections)"
        )
        if first:
            log.warning("api_connection_refused", reason=reason, uid=fields.get("uid"), detail=text)
        else:
            log.warning(
                "api_connection_refused",
                reason=reason,
                uid=fields.get("uid"),
                count=count,
                interval_s=self.limits.log_interval_s,
                detail=f"{text}; later refusals of this kind are counted, not logged",
            )

    def _report_accept_error(self, kind: str, count: int, fields: dict[str, Any], first: bool) -> None:
        log.error(
            "api_accept_failed",
            errno=kind,
            error=fields.get("error"),
            count=count,
            first=first,
            open=fields.get("open"),
            retry_in_s=self.limits.accept_retry_s,
        )
