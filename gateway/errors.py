"""The gateway's exception root and the errors every layer shares."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error raised by the gateway package."""


class ConfigError(GatewayError):
    """The configuration is unreadable or invalid; the message names the key and why."""


class StartupError(GatewayError):
    """The daemon cannot start (socket taken, key unsafe, ...); the message says what to do."""
