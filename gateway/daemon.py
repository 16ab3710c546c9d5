"""The composition root: builds every part from config, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from gateway import __version__
from gateway.api.app import build_app
from gateway.api.auth import routes as auth_routes
from gateway.api.browser import BrowserListener, start_browser_listener, ticket_routes
from gateway.api.context import ApiContext
from gateway.api.limits import api_limits
from gateway.api.server import ApiServer
from gateway.api.sessions import routes as session_routes
from gateway.api.system import routes as system_routes
from gateway.assembly import assemble
from gateway.commands.requeue import requeue_rejected
from gateway.config import GatewayConfig, load_config, locate_config
from gateway.errors import ConfigError, StartupError
from gateway.lifecycle import Lifecycle
from gateway.logs import configure_logging, set_level
from gateway.ops.report import StatusBoard
from gateway.parts import Parts
from gateway.private import make_private
from gateway.reload import merge_reload
from gateway.startup import EXIT_CONFIG, EXIT_FAILURE, UnusableFileError, check_files
from gateway.systemd import LoopMonitor, Notifier, Watchdog, listen_sockets, watchdog_interval

log = structlog.get_logger(__name__)

# Every route the Unix socket serves (the browser listener serves the kiosk's subset of them).
ROUTE_TABLES: Final = (system_routes, session_routes, auth_routes, ticket_routes)


@dataclass(frozen=True, slots=True)
class Running:
    """A started daemon: its parts, the API's context over them, the browser listener if any."""

    parts: Parts
    ctx: ApiContext
    browser: BrowserListener | None


class Daemon:
    """One gateway process: signals, reload, the systemd protocol; the parts come from `assemble`."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        config_path: str | None = None,
        notifier: Notifier | None = None,
        announce: Callable[[str], None] | None = None,
        install_signals: bool = True,
    ) -> None:
        self.install_signals = install_signals
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.announce = announce or (lambda line: print(line, flush=True))
        self.started_at = time.time()
        self.monitor = LoopMonitor()
        interval = watchdog_interval()
        self.watchdog = Watchdog(self.notifier, self.monitor, interval) if interval is not None else None
        self.life = Lifecycle(self._keep)
        self.server = ApiServer(
            socket_path=config.socket_path,
            socket_mode=config.api.mode,
            drain_timeout=config.api.drain_timeout_s,
            inherited=listen_sockets(),
            debug_tcp=config.api.debug_tcp,
            max_sessions=config.api.max_sessions,
            limits=api_limits(config.api),
            idle_timeout_s=config.api.idle_timeout_s,
            allowed_uids=lambda: self.config.api.allowed_uids,
        )
        self.exit_code = 0
        self._stopping = asyncio.Event()
        self._running: Running | None = None

    @property
    def running(self) -> Running:
        """The parts while the daemon runs (RuntimeError before it started serving)."""
        if self._running is None:
            raise RuntimeError("the daemon is not running")
        return self._running

    @property
    def parts(self) -> Parts:
        return self.running.parts

    # Lifecycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping.set()

    def reload(self) -> None:
        """SIGHUP: re-read config; apply live keys, report the rest; a bad file changes nothing."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as err:
            log.error("reload_rejected", error=str(err), kept=self.config.source)
            self.notifier.notify("READY=1", "STATUS=reload rejected: kept the running config")
            return
        effective, applied, restart = merge_reload(self.config, new)
        # Logged before the new level applies, so a quieter level still records the reload.
        log.warning("reloaded", applied=applied, needs_restart=restart)
        self.life.apply(effective)
        self.life.after_sighup()
        note = f"reloaded: {len(applied)} applied" + (
            f", restart needed for {', '.join(restart)}" if restart else ""
        )
        self.notifier.notify("READY=1", f"STATUS={note}")

    def _keep(self, effective: GatewayConfig) -> None:
        """The running config becomes `effective` (the reload hooks follow)."""
        self.config = effective
        set_level(effective.log.level)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            async with AsyncExitStack() as stack:
                await self._start(stack)
                await self._stopping.wait()
                log.info("stopping")
                self.notifier.stopping("draining requests")
        finally:
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            self.notifier.close()
            self._running = None
        log.info("stopped")
        return self.exit_code

    async def _start(self, stack: AsyncExitStack) -> None:
        config = self.config
        state_dir = config.state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.monitor.start()
        stack.push_async_callback(self.monitor.close)
        parts = await assemble(
            lambda: self.config,
            stack,
            self.life,
            announce=self.announce,
            watchdog_slack=lambda: self.watchdog.slack() if self.watchdog is not None else None,
            loop_lag=lambda: self.monitor.lag,
            started_at=self.started_at,
        )
        # After the parts are built: a start that fails on a precondition (a missing key) stays
        # one log line; files an older run left readable by others are tightened before serving.
        socket_inside = config.socket_path.parent == state_dir and bool(config.api.mode & 0o077)
        await asyncio.to_thread(
            make_private, state_dir, keep_root_searchable=socket_inside, leave=(config.key_path.parent,)
        )
        ctx = self._api_context(parts)
        await self.server.start(build_app(ctx, list(ROUTE_TABLES)))
        stack.push_async_callback(self.server.stop)
        browser = await start_browser_listener(ctx, list(ROUTE_TABLES), config, announce=self.announce)
        if browser is not None:
            stack.push_async_callback(browser.stop)
        self._running = Running(parts=parts, ctx=ctx, browser=browser)
        self._announce_ready(browser)
        if self.watchdog is not None:
            self.watchdog.start()
            stack.push_async_callback(self.watchdog.close)

    def _api_context(self, parts: Parts) -> ApiContext:
        """The handlers' view of the parts, built once; its config follows reloads."""
        board = StatusBoard(lambda: self.config, parts, self.server, self.monitor, started_at=self.started_at)
        ctx = ApiContext(
            config=self.config,
            sessions=parts.sessions,
            devices=parts.devices,
            stations=parts.stations,
            cloud=parts.uplink.cloud,
            auth=parts.auth,
            health=board.health,
            status=board.status,
            metrics=board.metrics,
            observe_request=parts.metrics.observe_request,
            station_overview=parts.station_overview,
            record_feedback=parts.supervision.record_feedback,
            is_online=parts.uplink.is_online,
            reset_device=parts.devices.reset,
            requeue_rejected=functools.partial(requeue_rejected, parts.uplink.outbox),
        )
        self.life.on_reload(lambda effective: setattr(ctx, "config", effective))
        return ctx

    def _announce_ready(self, browser: BrowserListener | None) -> None:
        config = self.config
        where = ", ".join(self.server.listening)
        self.announce(f"edge-gateway {__version__} ({config.node.id}) listening on {where}")
        if not self.server.socket_activated:
            self.announce(f"try: curl --unix-socket {config.socket_path} http://localhost/v1/health")
        if browser is not None:
            self.announce(browser.banner)
        log.info("ready", listening=self.server.listening, config=config.source)
        self.notifier.ready(f"serving on {where}")


def _config_key(err: ConfigError, source: str | None) -> str | None:
    """The `section.key` a ConfigError names (its text is `SOURCE: KEY: reason`), if any."""
    text = str(err)
    if source and text.startswith(f"{source}: "):
        text = text[len(source) + 2 :]
    key = text.split(": ", 1)[0]
    return key if re.fullmatch(r"[a-z_][a-z0-9_.]*", key) else None


def run_daemon(config_path: str | None) -> int:
    """`edge-gateway run`: serve until SIGTERM. A config or file problem at start is one error line
    (JSON off a terminal) naming the key and the fix, and exit status EXIT_CONFIG, which the unit
    does not restart on; any other start failure exits EXIT_FAILURE."""
    # Before the config is read its [log] settings are unknown: the defaults carry a refusal.
    configure_logging("info", "auto")
    try:
        config = load_config(config_path)
    except ConfigError as err:
        source = locate_config(config_path)
        log.error(
            "startup_failed",
            reason="invalid_config",
            config=source,
            key=_config_key(err, source),
            error=str(err),
            fix=f"correct it, check with `edge-gateway config check -c {source or 'FILE'}`, then start again",
        )
        return EXIT_CONFIG
    # Whatever starts us (systemd sets UMask=0077 too, a shell usually 0022): the state directory,
    # the outbox and its WAL hold personal data, so nothing is created readable by others.
    os.umask(0o077)
    log_file = Path(config.log.file) if config.log.file else config.state_dir / "log" / "gateway.jsonl"
    configure_logging(config.log.level, config.log.format, file=log_file)
    try:
        check_files(config)
        daemon = Daemon(config, config_path=config_path)
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(daemon.run())
    except UnusableFileError as err:
        problem = err.problem
        log.error(
            "startup_failed",
            reason="unusable_file",
            config=config.source,
            key=problem.key,
            path=problem.path,
            error=problem.problem,
            fix=problem.fix,
        )
        return EXIT_CONFIG
    except StartupError as err:
        log.error("startup_failed", reason="error", config=config.source, error=str(err))
        return EXIT_FAILURE
    return 0
