"""Builds the node's parts from config, in dependency order; each is closed in reverse by the stack.

The order: the uplink (node key, sealer, outbox, key rotation, publisher, downlink intake, broker
link), then the devices and their stations, the sessions, two-factor auth, the node's commands and
ops supervision; the broker link starts last, so a command never meets a part that does not exist.
`assemble` returns them as one `Parts`; the daemon serves the API over it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import structlog

from drivers.base import DeviceEvent
from gateway.auth.engine import Authenticator
from gateway.auth.store import AuthStore
from gateway.commands.handlers import NodeCommands
from gateway.config import GatewayConfig
from gateway.devcloud.simlink import SimCloudLink, sim_cloud_link
from gateway.devices import DeviceManager
from gateway.lifecycle import Lifecycle
from gateway.ops.alerts import OrderedSender
from gateway.ops.metrics import GatewayMetrics
from gateway.ops.supervision import Supervision
from gateway.ops.usage import UsageTracker
from gateway.parts import Link, Parts, Uplink, link_up
from gateway.remote import CommandDispatcher
from gateway.sessions import Session, SessionRegistry
from gateway.simulation import SIM_BROKER
from gateway.startup import load_node_key
from gateway.stations import StationMap
from gateway.uplink.commands import CommandVerifier, ReplayStore
from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import KeyRing, NodeKey
from gateway.uplink.mqtt import CommandHandler, LinkSettings, MqttLink
from gateway.uplink.outbox import Outbox, OutboxAlert
from gateway.uplink.publisher import Publisher
from gateway.uplink.requests import CloudRequests
from gateway.uplink.rotation import RetiredKeyPruner, RotationAnnouncer
from gateway.uplink.sink import OutboxSink, SwitchableSealer

log = structlog.get_logger(__name__)

ConfigSource = Callable[[], GatewayConfig]


async def assemble(
    config: ConfigSource,
    stack: AsyncExitStack,
    life: Lifecycle,
    *,
    announce: Callable[[str], None],
    watchdog_slack: Callable[[], float | None],
    loop_lag: Callable[[], float],
    started_at: float,
) -> Parts:
    """Every part, started; the broker link last. `config()` is the live config (reloads change it)."""
    cfg = config()
    uplink = await build_uplink(config, stack, life, announce=announce)
    dispatcher = uplink.dispatcher
    devices = DeviceManager()
    await devices.start(dict(cfg.devices), stack)
    life.on_reload(devices.configure_queues)
    stations = StationMap(cfg, devices)
    usage = UsageTracker(devices=devices.devices.keys(), stations=stations.names)
    sessions = build_sessions(cfg, stack, life, devices, stations, uplink)
    auth = await build_auth(cfg, stack, uplink, sessions)
    NodeCommands(
        config=config,
        apply_config=life.apply,
        reset_device=devices.reset,
        rotate_key=uplink.rotation.rotate,
        sessions=sessions,
        requests=uplink.requests,
        outbox=uplink.outbox,
    ).register(dispatcher)
    dispatcher.start()
    stack.push_async_callback(dispatcher.close)
    supervision = Supervision(
        cfg,
        cloud=uplink.cloud,
        devices=devices,
        stations=stations,
        sessions=sessions,
        usage=usage,
        loop_lag=loop_lag,
        started_at=started_at,
        outbox_backlog=uplink.outbox.backlog,
        watchdog_slack=watchdog_slack,
        reset_device=devices.reset,
    )
    supervision.start(stack)
    life.on_reload(supervision.configure)
    await _connect(uplink, stack)
    return Parts(
        uplink=uplink,
        devices=devices,
        stations=stations,
        sessions=sessions,
        usage=usage,
        auth=auth,
        supervision=supervision,
        metrics=GatewayMetrics(),
    )


async def _connect(uplink: Uplink, stack: AsyncExitStack) -> None:
    """Start the broker link (if any)."""
    if uplink.link is not None:
        # Last: commands may touch sessions and devices, so those exist before the first one.
        await uplink.link.start()
        stack.push_async_callback(uplink.link.close)


async def build_uplink(
    config: ConfigSource, stack: AsyncExitStack, life: Lifecycle, *, announce: Callable[[str], None]
) -> Uplink:
    """Node key, sealer, outbox (the CloudSink every part uses), key rotation, publisher, the
    downlink intake and the broker link (not started yet)."""
    cfg = config()
    node = cfg.node.id
    node_key = load_node_key(cfg)
    sealer = SwitchableSealer(Sealer(node_key, node))
    outbox, outbox_alerts = await _open_outbox(cfg, stack, sealer)
    cloud = OutboxSink(outbox)
    outbox_alerts.start(cloud)
    stack.push_async_callback(outbox_alerts.close)
    stack.push_async_callback(life.drain_background)
    rotation = await _start_rotation(config, stack, life, node_key, sealer, cloud)
    publisher = Publisher(
        outbox,
        node,
        keep_on_no_subscribers=cfg.uplink.keep_on_no_subscribers,
        no_subscribers_retry_min_s=cfg.uplink.backoff_min_s,
        no_subscribers_retry_max_s=cfg.uplink.no_subscribers_retry_max_s,
    )
    ring = KeyRing.from_files(cfg.uplink.cloud_keys) if cfg.uplink.cloud_keys else KeyRing()
    replay = ReplayStore(cfg.state_dir / "replay.sqlite3")
    stack.callback(replay.close)
    dispatcher = CommandDispatcher(CommandVerifier(node, ring, replay), cloud)
    link = build_link(cfg, node_key, publisher, announce=announce, on_command=dispatcher.on_message)
    if isinstance(link, SimCloudLink):
        ring.add_jwk(link.cloud.public_jwk)  # the in-process development cloud
    elif link is not None:  # the in-process dev cloud's link drops nothing
        link.on_drop = dispatcher.count_dropped

    return Uplink(
        sealer=sealer,
        outbox=outbox,
        cloud=cloud,
        outbox_alerts=outbox_alerts,
        publisher=publisher,
        link=link,
        broker=cfg.uplink.broker,
        requests=CloudRequests(cloud, is_online=lambda: link_up(link)),
        rotation=rotation,
        dispatcher=dispatcher,
    )


async def _open_outbox(
    config: GatewayConfig, stack: AsyncExitStack, sealer: SwitchableSealer
) -> tuple[Outbox, OrderedSender]:
    """The outbox, open (or recovered), and the sender of its own alerts (started with its sink)."""
    outbox_alerts = OrderedSender()
    outbox = Outbox(
        config.state_dir / config.outbox.file,
        sealer,
        config=config.outbox,
        on_alert=lambda alert: _submit_outbox_alert(outbox_alerts, alert),
    )
    await outbox.start()
    stack.push_async_callback(outbox.close)
    for recovery in outbox.recoveries:
        log.error("outbox_recovered", moved_to=[str(p) for p in recovery.moved_to], error=recovery.error)
    return outbox, outbox_alerts


async def _start_rotation(
    config: ConfigSource,
    stack: AsyncExitStack,
    life: Lifecycle,
    node_key: NodeKey,
    sealer: SwitchableSealer,
    cloud: OutboxSink,
) -> RotationAnnouncer:
    """The part that holds the signing key: announces a rotation (now if one is pending, and after
    a SIGHUP reloaded a new key file) and prunes the retired key after the overlap."""
    cfg = config()
    pruner = RetiredKeyPruner(cfg.key_path, cfg.node.id, cfg.state_dir)
    rotation = RotationAnnouncer(
        node_key,
        node_id=cfg.node.id,
        key_path=cfg.key_path,
        state_dir=cfg.state_dir,
        overlap_s=cfg.uplink.key_overlap_s,
        sealer=sealer,
        cloud=cloud,
        pruner=pruner,
        load_key=lambda: load_node_key(config()),
    )
    await rotation.announce_pending()
    pruner.start()
    stack.push_async_callback(pruner.close)

    def after_sighup() -> None:
        if rotation.has_pending():
            life.spawn(rotation.announce_pending(reload_key=True), "key-rotation")

    life.on_sighup(after_sighup)
    return rotation


def build_link(
    config: GatewayConfig,
    node_key: NodeKey,
    publisher: Publisher,
    *,
    announce: Callable[[str], None],
    on_command: CommandHandler,
) -> Link | None:
    """The broker link the config names: none, the in-process development cloud, or MQTT."""
    node = config.node.id
    if config.uplink.broker == SIM_BROKER:
        return sim_cloud_link(
            config.state_dir,
            node,
            node_key,
            config.key_path,
            announce=announce,
            on_command=on_command,
            workers=[publisher.run],
        )
    if not config.uplink.broker:
        return None
    settings = LinkSettings.from_config(config.uplink, config.outbox)
    return MqttLink(settings, node, on_command=on_command, workers=[publisher.run])


def _submit_outbox_alert(sender: OrderedSender, alert: OutboxAlert) -> None:
    """The outbox's trouble (full, corrupt, rejected) goes to ops as a signed alert."""
    log.error("outbox_alert", kind=alert.kind, stream=alert.stream, message=alert.message)
    if alert.kind == "outbox_full" and alert.stream == "alert":
        return  # an alert about the alert stream being full could never be stored
    sender.submit(
        alert.kind,
        {"severity": alert.severity, "stream": alert.stream, "message": alert.message, **alert.fields},
    )


def build_sessions(
    config: GatewayConfig,
    stack: AsyncExitStack,
    life: Lifecycle,
    devices: DeviceManager,
    stations: StationMap,
    uplink: Uplink,
) -> SessionRegistry:
    """The session registry, wired to the devices: a session's end cancels its device work, a
    device's events reach the sessions of the stations it serves, a user left idle is handed on."""
    api = config.api
    sessions = SessionRegistry(
        max_sessions=api.max_sessions,
        idle_timeout_s=api.session_idle_timeout_s,
        idle_warning_s=api.idle_warning_s,
        event_buffer=api.event_buffer,
    )
    life.on_reload(
        lambda cfg: sessions.configure(
            max_sessions=cfg.api.max_sessions,
            idle_timeout_s=cfg.api.session_idle_timeout_s,
            idle_warning_s=cfg.api.idle_warning_s,
        )
    )

    def release(session: Session, reason: str) -> None:
        devices.cancel_session(session.id, f"the session ended ({reason})")

    def has_device_work(session: Session) -> bool:
        return any(m.queue.pending(session.id) for m in devices.devices.values())

    async def assist_when_idle(session: Session, reason: str) -> None:
        if reason == "idle":
            body = {"session": session.id, "kind": session.kind, "reason": "idle_timeout"}
            await uplink.cloud.send("event", "assist", body)

    def broadcast(event: DeviceEvent) -> None:
        using = set(stations.stations_using(event.device))
        for session in sessions:
            if session.station in using:
                session.hub.publish(event.kind, device=event.device, **dict(event.data))

    sessions.on_end(release)
    sessions.add_busy_probe(has_device_work)
    sessions.on_end(assist_when_idle)
    sessions.start()
    stack.push_async_callback(sessions.close)
    devices.subscribe(broadcast)
    return sessions


async def build_auth(
    config: GatewayConfig, stack: AsyncExitStack, uplink: Uplink, sessions: SessionRegistry
) -> Authenticator:
    """The two-factor engine on its store; each session gets its auth state and clears it at the end."""
    store = await AuthStore.open(config.state_dir)
    stack.push_async_callback(store.close)

    async def audit(type_: str, body: dict[str, Any]) -> None:
        await uplink.cloud.send("audit", type_, body)

    auth = Authenticator(
        config.auth,
        store,
        audit=audit,
        cloud_request=uplink.requests.request,
        is_online=uplink.is_online,
    )
    stack.push_async_callback(auth.close)
    sessions.on_create(lambda session: setattr(session, "auth", auth.new_state(session.id, session.kind)))
    sessions.on_end(lambda session, _reason: session.auth.clear() if session.auth else None)
    return auth
