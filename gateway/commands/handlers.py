"""The node's downlink commands by name, each bound to the parts it acts on."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway import __version__
from gateway.commands.config_set import remote_config
from gateway.commands.requeue import requeue_rejected
from gateway.config import GatewayConfig
from gateway.remote import CommandDispatcher, CommandFailed
from gateway.sessions import SessionRegistry
from gateway.uplink.outbox import Outbox
from gateway.uplink.requests import CloudRequests


class NodeCommands:
    """ping, config.set, device.reset, session.end_all, keys.rotate, outbox.requeue, reply."""

    def __init__(
        self,
        *,
        config: Callable[[], GatewayConfig],
        apply_config: Callable[[GatewayConfig], None],
        reset_device: Callable[[str], Awaitable[dict[str, Any]]],
        rotate_key: Callable[[], Awaitable[dict[str, Any]]],
        sessions: SessionRegistry,
        requests: CloudRequests,
        outbox: Outbox,
    ) -> None:
        self._config = config
        self._apply_config = apply_config
        self._reset_device = reset_device
        self._rotate_key = rotate_key
        self._sessions = sessions
        self._requests = requests
        self._outbox = outbox

    def register(self, dispatcher: CommandDispatcher) -> None:
        for name, handler in {
            "ping": self.ping,
            "config.set": self.config_set,
            "device.reset": self.device_reset,
            "session.end_all": self.end_all,
            "keys.rotate": self.rotate,
            "outbox.requeue": self.requeue,
            "reply": self.reply,
        }.items():
            dispatcher.register(name, handler)

    async def ping(self, _body: Mapping[str, Any]) -> dict[str, Any]:
        return {"pong": time.time(), "version": __version__}

    async def config_set(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Only the live keys in `REMOTE_CONFIG_KEYS`, applied as a SIGHUP would."""
        effective, applied = remote_config(self._config(), body)
        self._apply_config(effective)
        return {"applied": applied}

    async def device_reset(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._reset_device(str(body.get("device", "")))

    async def end_all(self, _body: Mapping[str, Any]) -> dict[str, Any]:
        return {"ended": await self._sessions.end_all("ended_by_cloud")}

    async def rotate(self, _body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._rotate_key()

    async def reply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"matched": self._requests.resolve(body)}

    async def requeue(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return await requeue_rejected(self._outbox, body)
        except ValueError as err:
            raise CommandFailed(str(err)) from err
