"""The composition root: builds every part from config, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from drivers.base import DeviceEvent
from gateway import __version__
from gateway.api.app import build_app
from gateway.api.auth import routes as auth_routes
from gateway.api.browser import BrowserListener, start_browser_listener, ticket_routes
from gateway.api.context import ApiContext
from gateway.api.limits import HostileInputCollector, api_limits
from gateway.api.server import ApiServer
from gateway.api.sessions import routes as session_routes
from gateway.api.system import routes as system_routes
from gateway.auth.engine import Authenticator
from gateway.auth.store import AuthStore
from gateway.cloud import CloudSink, MemorySink
from gateway.commands.handlers import NodeCommands
from gateway.commands.requeue import requeue_rejected
from gateway.config import GatewayConfig, load_config, locate_config
from gateway.devcloud.simlink import SimCloudLink, sim_cloud_link
from gateway.devices import DeviceManager
from gateway.errors import ConfigError, StartupError
from gateway.logs import configure_logging, set_level
from gateway.ops.alerts import (
    OrderedSender,
)
from gateway.ops.metrics import GatewayMetrics
from gateway.ops.supervision import Supervision
from gateway.ops.usage import UsageTracker
from gateway.private import make_private
from gateway.reload import merge_reload
from gateway.remote import CommandDispatcher
from gateway.sessions import Session, SessionRegistry
from gateway.simulation import SIM_BROKER
from gateway.startup import EXIT_CONFIG, EXIT_FAILURE, UnusableFileError, check_files, load_node_key
from gateway.stations import StationMap
from gateway.systemd import LoopMonitor, Notifier, Watchdog, listen_sockets, watchdog_interval
from gateway.uplink.commands import CommandVerifier, ReplayStore
from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing, NodeKey
from gateway.uplink.mqtt import MqttLink
from gateway.uplink.outbox import Outbox, OutboxAlert
from gateway.uplink.publisher import Publisher
from gateway.uplink.requests import CloudRequests
from gateway.uplink.rotation import RetiredKeyPruner, RotationAnnouncer
from gateway.uplink.sink import OutboxSink, SwitchableSealer

log = structlog.get_logger(__name__)

ReloadHook = Callable[[GatewayConfig], None]


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
        self.browser: BrowserListener | None = None
        self._stopping = asyncio.Event()
        self._reload_hooks: list[ReloadHook] = []
        self._health_checks: dict[str, Callable[[], dict[str, Any]]] = {}
        self._status_parts: dict[str, Callable[[], Awaitable[Any] | Any]] = {}
        self.exit_code = 0
        self.route_tables: list[web.RouteTableDef] = []
        self.cloud: CloudSink = MemorySink()
        # The outbox's own alerts (full, corrupt, seq gap): kept in order until stored.
        self.outbox_alerts = OrderedSender(lambda: self.cloud)
        self._background: set[asyncio.Task[Any]] = set()
        self.link: MqttLink | SimCloudLink | None = None
        self.watchdog: Watchdog | None = None
        self.key_pruner: RetiredKeyPruner | None = None
        self.key_rotation: RotationAnnouncer | None = None
        # Built here, started with the other parts: the devices once the uplink exists, then the sessions.
        self.devices = DeviceManager()
        self.sessions = SessionRegistry(
            max_sessions=config.api.max_sessions,
            idle_timeout_s=config.api.session_idle_timeout_s,
            idle_warning_s=config.api.idle_warning_s,
            event_buffer=config.api.event_buffer,
        )
        self.on_reload(
            lambda cfg: self.sessions.configure(
                max_sessions=cfg.api.max_sessions,
                idle_timeout_s=cfg.api.session_idle_timeout_s,
                idle_warning_s=cfg.api.idle_warning_s,
            )
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
        self._apply(effective)
        if self.key_rotation is not None and self.key_rotation.has_pending():
            self._spawn(self.key_rotation.announce_pending(reload_key=True), "key-rotation")
        note = f"reloaded: {len(applied)} applied" + (
            f", restart needed for {', '.join(restart)}" if restart else ""
        )
        self.notifier.notify("READY=1", f"STATUS={note}")

    def _apply(self, effective: GatewayConfig) -> None:
        self.config = effective
        self.ctx.config = effective
        set_level(effective.log.level)
        for hook in self._reload_hooks:
            hook(effective)

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
        # After the parts are built: a start that fails on a precondition (a missing key) stays
        # one log line; files an older run left readable by others are tightened before serving.
        socket_inside = config.socket_path.parent == state_dir and bool(config.api.mode & 0o077)
        await asyncio.to_thread(
            make_private, state_dir, keep_root_searchable=socket_inside, leave=(config.key_path.parent,)
        )

        self.ctx.health = self.health
        self.ctx.status = self.status
        self.route_tables.append(ticket_routes)
        app = build_app(self.ctx, [system_routes, *self.route_tables])
        self.server = ApiServer(
            app,
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
        await self.server.start()
        stack.push_async_callback(self.server.stop)
        self.browser = await start_browser_listener(
            self.ctx, [system_routes, *self.route_tables], config, announce=self.announce
        )
        if self.browser is not None:
            stack.push_async_callback(self.browser.stop)

        where = ", ".join(self.server.listening)
        self.announce(f"edge-gateway {__version__} ({config.node.id}) listening on {where}")
        if not self.server.socket_activated:
            self.announce(f"try: curl --unix-socket {config.socket_path} http://localhost/v1/health")
        if self.browser is not None:
            self.announce(self.browser.banner)
        log.info("ready", listening=self.server.listening, config=config.source)
        self.notifier.ready(f"serving on {where}")
        interval = watchdog_interval()
        if interval is not None:
            self.watchdog = Watchdog(self.notifier, self.monitor, interval)
            self.watchdog.start()
            stack.push_async_callback(self.watchdog.close)

    async def _build_parts(self, stack: AsyncExitStack) -> None:
        """Devices, sessions, queues, uplink: each started here and closed in reverse by `stack`."""
        config = self.config
        rotation = await self._build_uplink(stack)

        await self.devices.start(dict(config.devices), stack)
        self.ctx.devices = self.devices
        self.stations = StationMap(config, self.devices)
        self.ctx.stations = self.stations
        self.usage = UsageTracker(devices=self.devices.devices.keys(), stations=self.stations.names)
        self.ctx.station_overview = self._station_overview
        self.add_status("devices", self.stations.describe_devices)
        self.add_status("stations", self._station_overview)
        self.add_health_check("devices", self.devices.health)

        sessions = self.sessions
        sessions.on_end(lambda session, reason: self._release(session.id, reason))
        sessions.add_busy_probe(self._has_device_work)
        sessions.on_end(self._assist_when_idle)
        sessions.start()
        stack.push_async_callback(sessions.close)
        self.ctx.sessions = sessions
        self.devices.subscribe(self._broadcast_device_event)
        self.on_reload(self.devices.configure_queues)
        self.add_status("sessions", self._sessions_status)
        self.route_tables.append(session_routes)
        self.auth = await self._build_auth(stack)
        self.dispatcher = self._build_commands(stack, rotation)
        self._build_ops(stack)
        if self.link is not None:
            # Last: commands may touch sessions and devices, so those exist before the first one.
            await self.link.start()
            stack.push_async_callback(self.link.close)

    async def _build_uplink(self, stack: AsyncExitStack) -> RotationAnnouncer:
        """Node key, sealer, outbox (the CloudSink every part uses), publisher, MQTT link; returns
        the part that holds the signing key and announces its rotations."""
        config = self.config
        node = config.node.id
        node_key = load_node_key(config)
        self.sealer = SwitchableSealer(Sealer(node_key, node))
        self.outbox = Outbox(
            config.state_dir / config.outbox.file,
            self.sealer,
            config=config.outbox,
            on_alert=self._outbox_alert,
        )
        await self.outbox.start()
        stack.push_async_callback(self.outbox.close)
        for recovery in self.outbox.recoveries:
            log.error("outbox_recovered", moved_to=[str(p) for p in recovery.moved_to], error=recovery.error)
        self.cloud = OutboxSink(self.outbox)
        self.ctx.cloud = self.cloud
        self.outbox_alerts.start()
        stack.push_async_callback(self.outbox_alerts.close)
        stack.push_async_callback(self._drain_background)
        self.key_pruner = RetiredKeyPruner(config.key_path, node, config.state_dir)
        rotation = RotationAnnouncer(
            node_key,
            node_id=node,
            key_path=config.key_path,
            state_dir=config.state_dir,
            overlap_s=config.uplink.key_overlap_s,
            sealer=self.sealer,
            cloud=self.cloud,
            pruner=self.key_pruner,
            load_key=lambda: load_node_key(self.config),
        )
        self.key_rotation = rotation
        await rotation.announce_pending()
        self.key_pruner.start()
        stack.push_async_callback(self.key_pruner.close)
        self.publisher = Publisher(
            self.outbox,
            node,
            keep_on_no_subscribers=config.uplink.keep_on_no_subscribers,
            no_subscribers_retry_min_s=config.uplink.backoff_min_s,
            no_subscribers_retry_max_s=config.uplink.no_subscribers_retry_max_s,
        )
        self.link = self._build_link(node_key, self.publisher)
        self.requests = CloudRequests(self.cloud, is_online=self.is_online)
        self.add_status("outbox", self._outbox_status)
        self.add_status("uplink", self._uplink_status)
        self.add_health_check("uplink", self._uplink_health)
        return rotation

    def _build_link(self, node_key: NodeKey, publisher: Publisher) -> MqttLink | SimCloudLink | None:
        """The broker link the config names: none, the in-process development cloud, or MQTT."""
        config, node = self.config, self.config.node.id
        if config.uplink.broker == SIM_BROKER:
            return sim_cloud_link(
                config.state_dir,
                node,
                node_key,
                config.key_path,
                announce=self.announce,
                on_command=self._on_command,
                workers=[publisher.run],
            )
        if not config.uplink.broker:
            return None
        from gateway.uplink.mqtt import LinkSettings

        settings = LinkSettings.from_config(config.uplink, config.outbox)
        return MqttLink(settings, node, on_command=self._on_command, workers=[publisher.run])

    @property
    def node_key(self) -> NodeKey:
        """The key the node signs with now (it changes on rotation)."""
        if self.key_rotation is None:
            raise RuntimeError("the node key is loaded when the uplink is built")
        return self.key_rotation.node_key

    def is_online(self) -> bool:
        return self.link is not None and self.link.state.connected

    def _outbox_status(self) -> dict[str, Any]:
        return {**self.outbox.stats(), "publisher": self.publisher.stats()}

    def _uplink_status(self) -> dict[str, Any]:
        if self.link is None:
            return {"configured": False, "connected": False}
        return {"configured": True, "broker": self.config.uplink.broker, **self.link.state.as_dict()}

    def _uplink_health(self) -> dict[str, Any]:
        if self.link is None:
            return {"status": "ok", "configured": False}
        state = self.link.state
        return {
            "status": "ok" if state.connected else "degraded",
            "connected": state.connected,
            "backlog": self.outbox.backlog(),
        }

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain_background(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _outbox_alert(self, alert: OutboxAlert) -> None:
        """The outbox's trouble (full, corrupt, rejected) goes to ops as a signed alert."""
        log.error("outbox_alert", kind=alert.kind, stream=alert.stream, message=alert.message)
        if alert.kind == "outbox_full" and alert.stream == "alert":
            return  # an alert about the alert stream being full could never be stored

        self.outbox_alerts.submit(
            alert.kind,
            {"severity": alert.severity, "stream": alert.stream, "message": alert.message, **alert.fields},
        )

    async def _build_auth(self, stack: AsyncExitStack) -> Authenticator:
        """The two-factor engine on its store; sessions get and clear their auth state."""
        store = await AuthStore.open(self.config.state_dir)
        stack.push_async_callback(store.close)

        async def audit(type_: str, body: dict[str, Any]) -> None:
            await self.cloud.send("audit", type_, body)

        auth = Authenticator(
            self.config.auth,
            store,
            audit=audit,
            cloud_request=self.requests.request,
            is_online=self.is_online,
        )
        stack.push_async_callback(auth.close)
        self.ctx.auth = auth
        self.ctx.is_online = self.is_online
        self.ctx.reset_device = self._reset_device
        self.ctx.requeue_rejected = functools.partial(requeue_rejected, self.outbox)
        self.sessions.on_create(
            lambda session: setattr(session, "auth", auth.new_state(session.id, session.kind))
        )
        self.sessions.on_end(lambda session, _reason: session.auth.clear() if session.auth else None)
        self.route_tables.append(auth_routes)
        return auth

    async def _reset_device(self, name: str) -> dict[str, Any]:
        managed = self.devices.named(name)
        cancelled = managed.queue.purge("the device is being reset")
        await managed.device.close()
        await managed.device.start()
        return {"device": name, "cancelled": cancelled, "state": managed.device.status.state.value}

    def _build_commands(self, stack: AsyncExitStack, rotation: RotationAnnouncer) -> CommandDispatcher:
        """The downlink intake: verifier (cloud keys, replay store) and the node's commands."""
        replay = ReplayStore(self.config.state_dir / "replay.sqlite3")
        stack.callback(replay.close)
        ring = (
            KeyRing.from_files(self.config.uplink.cloud_keys) if self.config.uplink.cloud_keys else KeyRing()
        )
        if isinstance(self.link, SimCloudLink):
            ring.add_jwk(self.link.cloud.public_jwk)  # the in-process development cloud
        verifier = CommandVerifier(self.config.node.id, ring, replay)
        dispatcher = CommandDispatcher(verifier, self.cloud)
        NodeCommands(
            config=lambda: self.config,
            apply_config=self._apply,
            reset_device=self._reset_device,
            rotate_key=rotation.rotate,
            sessions=self.sessions,
            requests=self.requests,
            outbox=self.outbox,
        ).register(dispatcher)
        dispatcher.start()
        if isinstance(self.link, MqttLink):  # the in-process dev cloud's link drops nothing
            self.link.on_drop = dispatcher.count_dropped
        stack.push_async_callback(dispatcher.close)
        self.add_status("commands", self._downlink_status)
        self.add_status("api", lambda: self.server.stats() if self.server is not None else {})
        return dispatcher

    def _downlink_status(self) -> dict[str, Any]:
        """The dispatcher's counts (what the MQTT link dropped before it included)."""
        return self.dispatcher.stats()

    async def _on_command(self, topic: str, payload: bytes) -> None:
        await self.dispatcher.on_message(topic, payload)

    def _build_ops(self, stack: AsyncExitStack) -> None:
        """Metrics, telemetry, device usage roll-ups and the red/yellow/blue alerts."""
        config = self.config
        metrics = GatewayMetrics()
        self.ctx.request_observer = metrics.observe_request

        async def render_metrics() -> bytes:
            return metrics.render(await self.status())

        self.ctx.metrics = render_metrics
        metrics.registry.register(
            HostileInputCollector(
                lambda: self.server.stats() if self.server is not None else {}, self._downlink_status
            )
        )
        supervision = Supervision(
            config,
            cloud=self.cloud,
            devices=self.devices,
            stations=self.stations,
            sessions=self.sessions,
            usage=self.usage,
            loop_lag=lambda: self.monitor.lag,
            started_at=self.ctx.started_at,
            outbox_backlog=self.outbox.backlog,
            watchdog_slack=lambda: self.watchdog.slack() if self.watchdog is not None else None,
            reset_device=self._reset_device,
        )
        supervision.start(stack)
        self.ctx.record_feedback = supervision.record_feedback
        self.on_reload(supervision.configure)
        self.add_status("alerts", supervision.alerts.active)
        self.add_status("usage", self.usage.snapshot)

    def _station_overview(self) -> list[dict[str, Any]]:
        """GET /v1/stations: each station's devices and their states, open sessions, today's figures."""
        open_at: dict[str, int] = {}
        for session in self.sessions:
            open_at[session.station] = open_at.get(session.station, 0) + 1
        usage = self.usage.stations.today()
        return [
            {
                **self.stations.describe_station(name),
                "sessions": open_at.get(name, 0),
                "usage": usage.get(name, {}),
            }
            for name in self.stations.names
        ]

    def _has_device_work(self, session: Session) -> bool:
        return any(m.queue.pending(session.id) for m in self.devices.devices.values())

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
        """A device's events (card present, state) reach only the sessions of stations it serves."""
        stations = set(self.stations.stations_using(event.device))
        for session in self.sessions:
            if session.station in stations:
                session.hub.publish(event.kind, device=event.device, **dict(event.data))

    def _sessions_status(self) -> dict[str, Any]:
        return {
            "open": len(self.sessions),
            "max": self.sessions.max_sessions,
            "created_total": self.sessions.created_total,
            "ended_total": dict(self.sessions.ended_total),
        }


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
