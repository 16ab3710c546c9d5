"""Binding the API: the Unix socket (stale-socket cleanup, mode, no stealing), systemd's socket, debug TCP."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

import structlog
from aiohttp import web

from gateway.config import debug_tcp_address
from gateway.errors import StartupError

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
    """Runs the aiohttp app on the configured listeners and drains it on stop."""

    def __init__(
        self,
        app: web.Application,
        *,
        socket_path: Path,
        socket_mode: int,
        drain_timeout: float,
        inherited: list[socket.socket] | None = None,
        debug_tcp: str = "",
        max_sessions: int = 200,
    ) -> None:
        self.app = app
        self.socket_path = socket_path
        self.socket_mode = socket_mode
        self.drain_timeout = drain_timeout
        self.inherited = inherited or []
        self.debug_tcp = debug_tcp
        self.listening: list[str] = []
        # Every kiosk may connect at the same moment: the listen backlog must hold them all.
        self.backlog = max(128, 2 * max_sessions)
        self._runner: web.AppRunner | None = None
        self._owns_path = False

    @property
    def socket_activated(self) -> bool:
        return bool(self.inherited)

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.drain_timeout,
            # A kiosk that hangs up withdraws its request: its queued device work is cancelled.
            handler_cancellation=True,
        )
        await runner.setup()
        self._runner = runner
        try:
            if self.inherited:
                for sock in self.inherited:
                    site: web.BaseSite = web.SockSite(runner, sock, backlog=self.backlog)
                    await site.start()
                    self.listening.append(f"fd:{sock.fileno()}")
            else:
                prepare_socket_path(self.socket_path)
                site = web.UnixSite(runner, self.socket_path, backlog=self.backlog)
                await site.start()
                self._owns_path = True
                os.chmod(self.socket_path, self.socket_mode)
                self.listening.append(str(self.socket_path))
            if self.debug_tcp:
                host, port = debug_tcp_address(self.debug_tcp)
                tcp = web.TCPSite(runner, host, port, backlog=self.backlog)
                await tcp.start()
                self.listening.append(f"http://{host}:{port}")
        except OSError as err:
            await self.stop()
            raise StartupError(f"cannot listen: {err}") from err

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the drain timeout, close."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._owns_path:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            self._owns_path = False
