"""What parts register with the daemon's lifecycle: a new config (reload or the cloud's config.set),
SIGHUP, and background tasks the daemon waits for (briefly) when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.config import GatewayConfig

ReloadHook = Callable[[GatewayConfig], None]


class Lifecycle:
    """Hooks called in registration order; `apply` is how a new effective config takes effect."""

    def __init__(self, apply: Callable[[GatewayConfig], None]) -> None:
        self._apply = apply
        self._reload: list[ReloadHook] = []
        self._sighup: list[Callable[[], None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    def on_reload(self, hook: ReloadHook) -> None:
        """Called with every new effective config (SIGHUP reload, remote config.set)."""
        self._reload.append(hook)

    def on_sighup(self, hook: Callable[[], None]) -> None:
        """Called after a SIGHUP reload was applied."""
        self._sighup.append(hook)

    def apply(self, config: GatewayConfig) -> None:
        """Make `config` the running one: the daemon keeps it, then every reload hook runs."""
        self._apply(config)
        for hook in self._reload:
            hook(config)

    def after_sighup(self) -> None:
        for hook in self._sighup:
            hook()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `coro` in the background; stop waits up to 5 s for it, then cancels it."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain_background(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
