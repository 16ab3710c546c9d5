"""The node's status and health, put together from its parts: `/v1/status`, `/v1/health`, `/metrics`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway import __version__
from gateway.api.server import ApiServer
from gateway.config import GatewayConfig
from gateway.parts import Parts
from gateway.sessions import SessionRegistry
from gateway.status import GatewayStatus, LoopStatus, SessionCounts
from gateway.systemd import LoopMonitor


def session_counts(sessions: SessionRegistry) -> SessionCounts:
    return SessionCounts(
        open=len(sessions),
        max=sessions.max_sessions,
        created_total=sessions.created_total,
        ended_total=dict(sessions.ended_total),
    )


class StatusBoard:
    """Reads every part's own typed status into one `GatewayStatus`; judges health from the parts."""

    def __init__(
        self,
        config: Callable[[], GatewayConfig],
        parts: Parts,
        server: ApiServer,
        monitor: LoopMonitor,
        *,
        started_at: float,
    ) -> None:
        self._config = config
        self._parts = parts
        self._server = server
        self._monitor = monitor
        self.started_at = started_at

    async def status(self) -> GatewayStatus:
        parts, config = self._parts, self._config()
        return GatewayStatus(
            node=config.node.id,
            version=__version__,
            config=config.source,
            started_at=self.started_at,
            listening=list(self._server.listening),
            loop=LoopStatus(lag_s=round(self._monitor.lag, 4), max_lag_s=round(self._monitor.max_lag, 4)),
            outbox=parts.uplink.outbox_status(),
            uplink=parts.uplink.status(),
            devices=parts.stations.describe_devices(),
            stations=parts.station_overview(),
            sessions=session_counts(parts.sessions),
            commands=parts.uplink.dispatcher.stats(),
            api=self._server.stats(),
            alerts=parts.supervision.alerts.active(),
            usage=parts.usage.snapshot(),
        )

    async def health(self) -> dict[str, Any]:
        """{"status": "ok"|"degraded"|"failing", "checks": {...}}: the loop, the uplink, the devices."""
        checks: dict[str, Any] = {
            "event_loop": {
                "status": "ok" if self._monitor.healthy() else "degraded",
                "lag_s": round(self._monitor.lag, 4),
            }
        }
        for name, check in (("uplink", self._parts.uplink.health), ("devices", self._parts.devices.health)):
            try:
                checks[name] = check()
            except Exception as err:
                checks[name] = {"status": "failing", "error": str(err)}
        states = {c.get("status", "ok") for c in checks.values()}
        overall = "failing" if "failing" in states else "degraded" if "degraded" in states else "ok"
        return {"status": overall, "checks": checks}

    async def metrics(self) -> bytes:
        return self._parts.metrics.render(await self.status())
