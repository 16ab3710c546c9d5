"""The composition root: builds every part from config, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec
import structlog
from aiohttp import web

from drivers.base import DeviceEvent
from gateway import __version__
from gateway.api.app import build_app
from gateway.api.context import ApiContext
from gateway.api.server import ApiServer
from gateway.api.sessions import routes as session_routes
from gateway.api.system import routes as system_routes
from gateway.cloud import CloudSink, MemorySink
from gateway.config import GatewayConfig, as_dict, load_config
from gateway.devices import DeviceManager
from gateway.errors import ConfigError, StartupError
from gateway.logs import configure_logging, set_level
from gateway.sessions import Session, SessionRegistry
from gateway.systemd import LoopMonitor, Notifier, Watchdog, listen_sockets, watchdog_interval
from gateway.uplink.keys import NodeKey

log = structlog.get_logger(__name__)

# Config keys a SIGHUP applies at once; every other change waits for a restart.
LIVE_KEYS = (
    "log.level",
    "api.allowed_uids",
    "api.max_sessions",
    "api.session_idle_timeout_s",
    "api.idle_warning_s",
    "api.request_timeout_s",
    "api.drain_timeout_s",
    "api.sse_heartbeat_s",
    "ops.telemetry_interval_s",
    "ops.loop_lag_warn_s",
)

ReloadHook = Callable[[GatewayConfig], None]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and prefix.count(".") < 1 and key != "devices":
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _is_live(path: str) -> bool:
    return path in LIVE_KEYS


def merge_reload(old: GatewayConfig, new: GatewayConfig) -> tuple[GatewayConfig, list[str], list[str]]:
    """Take the live-changeable values from `new`; return (effective, applied, needs_restart)."""
    old_flat, new_flat = _flatten(as_dict(old)), _flatten(as_dict(new))
    applied, restart = [], []
    merged = as_dict(old)
    for path in sorted(set(old_flat) | set(new_flat)):
        if old_flat.get(path) == new_flat.get(path):
            continue
        if _is_live(path):
            section, key = path.split(".", 1)
            merged[section][key] = new_flat[path]
            applied.append(path)
        else:
            restart.append(path)
    effective = msgspec.convert(merged, GatewayConfig)
    return msgspec.structs.replace(effective, source=new.source), applied, restart


class Daemon:
    """One gateway process: parts, signals, systemd protocol."""

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
        self.ctx = ApiContext(config=config)
        self.monitor = LoopMonitor()
        self.server: ApiServer | None = None
        self._stopping = asyncio.Event()
        self._reload_hooks: list[ReloadHook] = []
        self._health_checks: dict[str, Callable[[], dict[str, Any]]] = {}
        self._status_parts: dict[str, Callable[[], Awaitable[Any] | Any]] = {}
        self.exit_code = 0
        self.route_tables: list[web.RouteTableDef] = []
        self.cloud: CloudSink = MemorySink()
        self.devices = DeviceManager()
        self.sessions = SessionRegistry(
            max_sessions=1, idle_timeout_s=config.api.session_idle_timeout_s, idle_warning_s=0, event_buffer=8
        )

    # Registration points for parts -------------------------------------------------------

    def on_reload(self, hook: ReloadHook) -> None:
        self._reload_hooks.append(hook)

    def add_health_check(self, name: str, check: Callable[[], dict[str, Any]]) -> None:
        """A check returns {"status": "ok"|"degraded"|"failing", ...}."""
        self._health_checks[name] = check

    def add_status(self, name: str, part: Callable[[], Awaitable[Any] | Any]) -> None:
        self._status_parts[name] = part

    # Health and status -------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        checks: dict[str, Any] = {
            "event_loop": {
                "status": "ok" if self.monitor.healthy() else "degraded",
                "lag_s": round(self.monitor.lag, 4),
            }
        }
        for name, check in self._health_checks.items():
            try:
                checks[name] = check()
            except Exception as err:
                checks[name] = {"status": "failing", "error": str(err)}
        states = {c.get("status", "ok") for c in checks.values()}
        overall = "failing" if "failing" in states else "degraded" if "degraded" in states else "ok"
        return {"status": overall, "checks": checks}

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "node": self.config.node.id,
            "version": __version__,
            "config": self.config.source,
            "started_at": self.ctx.started_at,
            "listening": self.server.listening if self.server else [],
            "loop": {
                "lag_s": round(self.monitor.lag, 4),
                "max_lag_s": round(self.monitor.max_lag, 4),
            },
        }
        for name, part in self._status_parts.items():
            value = part()
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            result[name] = value
        return result

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
        self.config = effective
        self.ctx.config = effective
        set_level(effective.log.level)
        for hook in self._reload_hooks:
            hook(effective)
        note = f"reloaded: {len(applied)} applied" + (
            f", restart needed for {', '.join(restart)}" if restart else ""
        )
        self.notifier.notify("READY=1", f"STATUS={note}")

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
        log.info("stopped")
        return self.exit_code

    async def _start(self, stack: AsyncExitStack) -> None:
        config = self.config
        state_dir = config.state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.monitor.start()
        stack.push_async_callback(self.monitor.close)

        await self._build_parts(stack)

        self.ctx.health = self.health
        self.ctx.status = self.status
        app = build_app(self.ctx, [system_routes, *self.route_tables])
        self.server = ApiServer(
            app,
            socket_path=config.socket_path,
            socket_mode=config.api.mode,
            drain_timeout=config.api.drain_timeout_s,
            inherited=listen_sockets(),
            debug_tcp=config.api.debug_tcp,
        )
        await self.server.start()
        stack.push_async_callback(self.server.stop)

        where = ", ".join(self.server.listening)
        self.announce(f"edge-gateway {__version__} ({config.node.id}) listening on {where}")
        if not self.server.socket_activated:
            self.announce(f"try: curl --unix-socket {config.socket_path} http://localhost/v1/health")
        log.info("ready", listening=self.server.listening, config=config.source)
        self.notifier.ready(f"serving on {where}")
        interval = watchdog_interval()
        if interval is not None:
            watchdog = Watchdog(self.notifier, self.monitor, interval)
            watchdog.start()
            stack.push_async_callback(watchdog.close)

    async def _build_parts(self, stack: AsyncExitStack) -> None:
        """Devices, sessions, queues, uplink: each started here and closed in reverse by `stack`."""
        config = self.config
        self.node_key = self._load_node_key()
        self.cloud = MemorySink()
        self.ctx.cloud = self.cloud

        self.devices = DeviceManager()
        await self.devices.start(dict(config.devices), stack)
        self.ctx.devices = self.devices
        self.add_health_check("devices", self.devices.health)
        self.add_status("devices", self.devices.describe)

        sessions = SessionRegistry(
            max_sessions=config.api.max_sessions,
            idle_timeout_s=config.api.session_idle_timeout_s,
            idle_warning_s=config.api.idle_warning_s,
            event_buffer=config.api.event_buffer,
        )
        self.sessions = sessions
        sessions.on_end(lambda session, reason: self._release(session.id, reason))
        sessions.on_end(self._assist_when_idle)
        sessions.start()
        stack.push_async_callback(sessions.close)
        self.ctx.sessions = sessions
        self.devices.subscribe(self._broadcast_device_event)
        self.add_status("sessions", self._sessions_status)
        self.on_reload(
            lambda cfg: sessions.configure(
                max_sessions=cfg.api.max_sessions,
                idle_timeout_s=cfg.api.session_idle_timeout_s,
                idle_warning_s=cfg.api.idle_warning_s,
            )
        )
        self.route_tables.append(session_routes)

    def _load_node_key(self) -> NodeKey:
        """The signing key; a missing key is made only where config allows, a loose one is refused."""
        from gateway.uplink.keys import KeyMissingError, KeyStoreError, init_key, load_key

        path, node = self.config.key_path, self.config.node.id
        try:
            return load_key(path, node)
        except KeyMissingError as err:
            if not self.config.node.auto_init_key:
                raise StartupError(
                    f"node key {path} is missing: create it with `edge-gateway keys init -c CONFIG`"
                ) from err
            return init_key(path, node)
        except KeyStoreError as err:
            raise StartupError(str(err)) from err

    def _release(self, session_id: str, reason: str) -> None:
        self.devices.cancel_session(session_id, f"the session ended ({reason})")

    async def _assist_when_idle(self, session: Session, reason: str) -> None:
        """A user left idle is handed to a human: the cloud hears about it."""
        if reason == "idle":
            await self.cloud.send(
                "event",
                "assist",
                {"session": session.id, "kind": session.kind, "reason": "idle_timeout"},
            )

    def _broadcast_device_event(self, event: DeviceEvent) -> None:
        for session in self.sessions:
            session.hub.publish(event.kind, device=event.device, **dict(event.data))

    def _sessions_status(self) -> dict[str, Any]:
        return {
            "open": len(self.sessions),
            "max": self.sessions.max_sessions,
            "created_total": self.sessions.created_total,
            "ended_total": dict(self.sessions.ended_total),
        }


def run_daemon(config_path: str | None) -> int:
    """`edge-gateway run`: load config (exit 2 when invalid), then serve until SIGTERM."""
    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(f"edge-gateway: invalid configuration: {err}", file=sys.stderr)
        return 2
    log_file = Path(config.log.file) if config.log.file else config.state_dir / "log" / "gateway.jsonl"
    configure_logging(config.log.level, config.log.format, file=log_file)
    daemon = Daemon(config, config_path=config_path)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(daemon.run())
    except StartupError as err:
        log.error("startup_failed", error=str(err))
        print(f"edge-gateway: cannot start: {err}", file=sys.stderr)
        return 1
    return 0
