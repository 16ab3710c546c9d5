"""Binding the API: the Unix socket (stale-socket cleanup, mode, no stealing), systemd's socket, debug TCP.

Connections are accepted by `ConnectionGuard` (peer uid, cap, header timeout), not by aiohttp's sites.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Collection
from pathlib import Path

import structlog
from aiohttp import web

from gateway.api.httplog import QuietServerLogger
from gateway.api.listener import ConnectionGuard, Limits, connection_cap, open_file_limit
from gateway.config import debug_tcp_address
from gateway.errors import StartupError
from gateway.status import ApiStats

log = structlog.get_logger(__name__)


def _probe_listener(path: Path) -> bool:
    """True when something accepts connections on the socket file."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as err:
        if err.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            return False
        raise
    else:
        return True
    finally:
        probe.close()


def prepare_socket_path(path: Path) -> None:
    """Remove a socket left by a dead daemon; refuse if a live one is listening there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise StartupError(f"{path} exists and is not a socket; move it away or set api.socket")
    if _probe_listener(path):
        raise StartupError(
            f"another edge-gateway is already listening on {path}; stop it first "
            "(systemctl stop edge-gateway) or set a different api.socket"
        )
    log.info("stale_socket_removed", path=str(path))
    path.unlink()


class ApiServer:
    """Runs the aiohttp app on the configured listeners, within the connection limits; drains on stop."""

    def __init__(
        self,
        *,
        socket_path: Path,
        socket_mode: int,
        drain_timeout: float,
        inherited: list[socket.socket] | None = None,
        debug_tcp: str = "",
        max_sessions: int = 200,
        limits: Limits | None = None,
        idle_timeout_s: float = 60.0,
        allowed_uids: Callable[[], Collection[int]] = lambda: (),
    ) -> None:
        # The application it serves, from `start` on.
        self.app: web.Application | None = None
        self.socket_path = socket_path
        self.socket_mode = socket_mode
        self.drain_timeout = drain_timeout
        self.inherited = inherited or []
        self.debug_tcp = debug_tcp
        self.listening: list[str] = []
        # Every kiosk may connect at the same moment: the listen backlog must hold them all.
        self.backlog = max(128, 2 * max_sessions)
        self.limits = limits or Limits(
            max_connections=connection_cap(0, open_file_limit()),
            reserved_connections=32,
            header_timeout_s=10.0,
        )
        self.idle_timeout_s = idle_timeout_s
        self.allowed_uids = allowed_uids
        self.http_log = QuietServerLogger(interval_s=self.limits.log_interval_s)
        self.guard: ConnectionGuard | None = None
        self._sockets: list[socket.socket] = []
        self._runner: web.AppRunner | None = None
        self._owns_path = False

    @property
    def socket_activated(self) -> bool:
        return bool(self.inherited)

    def stats(self) -> ApiStats:
        """Connection and malformed-request counters for /v1/status and /metrics."""
        connections = self.guard.stats() if self.guard is not None else None
        return ApiStats(connections=connections, malformed_requests=self.http_log.malformed)

    async def start(self, app: web.Application) -> None:
        """Serve `app` on the inherited sockets (socket activation) or the socket file, and debug TCP."""
        self.app = app
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.drain_timeout,
            # A kiosk that hangs up withdraws its request: its queued device work is cancelled.
            handler_cancellation=True,
            # An idle keep-alive connection (or one that never finishes a request) is closed then.
            keepalive_timeout=self.idle_timeout_s,
            logger=self.http_log,
        )
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None
        guard = ConnectionGuard(server, self.limits, allowed_uids=self.allowed_uids)
        guard.tallies.append(self.http_log.tally)
        self.guard = guard
        try:
            if self.inherited:
                for sock in self.inherited:
                    self._serve(sock)
                    self.listening.append(f"fd:{sock.fileno()}")
            else:
                prepare_socket_path(self.socket_path)
                self._serve(self._unix_listener())
                self._owns_path = True
                self.listening.append(str(self.socket_path))
            if self.debug_tcp:
                host, port = debug_tcp_address(self.debug_tcp)
                self._serve(socket.create_server((host, port), backlog=self.backlog))
                self.listening.append(f"http://{host}:{port}")
        except OSError as err:
            await self.stop()
            raise StartupError(f"cannot listen: {err}") from err
        log.info(
            "api_limits",
            max_connections=self.limits.max_connections,
            reserved_connections=self.limits.reserved_connections,
            open_file_limit=open_file_limit(),
            header_timeout_s=self.limits.header_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
        )

    def _unix_listener(self) -> socket.socket:
        """Bind the socket file, set its mode before anyone can connect, then listen."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket_path))
            os.chmod(self.socket_path, self.socket_mode)
            sock.listen(self.backlog)
        except OSError:
            sock.close()
            raise
        return sock

    def _serve(self, sock: socket.socket) -> None:
        assert self.guard is not None
        self._sockets.append(sock)
        self.guard.listen(sock)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the drain timeout, close."""
        if self.guard is not None:
            self.guard.close()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._owns_path:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            self._owns_path = False
