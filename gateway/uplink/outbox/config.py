"""The `[outbox]` configuration: the streams, their message classes and the outbox-wide limits."""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

STREAMS: Final = ("tx", "audit", "alert", "telemetry", "event")


class ClassConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How one message class (stream) is queued: send order, lifetime, quota, what full means."""

    # Higher is sent first; within a stream messages always go in seq order.
    priority: Annotated[int, msgspec.Meta(ge=0, le=100)] = 50
    # 0 = never expires.
    ttl_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # 0 = only the outbox-wide max_bytes applies.
    max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    when_full: Literal["refuse", "drop_oldest"] = "refuse"


def _tx() -> ClassConfig:
    return ClassConfig(priority=80)


def _audit() -> ClassConfig:
    return ClassConfig(priority=60)


def _alert() -> ClassConfig:
    return ClassConfig(priority=90, ttl_s=7 * 86_400.0, max_bytes=64 << 20, when_full="drop_oldest")


def _event() -> ClassConfig:
    return ClassConfig(priority=40, ttl_s=7 * 86_400.0, max_bytes=256 << 20, when_full="drop_oldest")


def _telemetry() -> ClassConfig:
    return ClassConfig(priority=10, ttl_s=86_400.0, max_bytes=64 << 20, when_full="drop_oldest")


class OutboxConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The `[outbox]` table: file, quotas, group-commit window, in-flight window, message classes."""

    # Relative to the state dir.
    file: str = "outbox.sqlite3"
    # Sum of stored envelope bytes (queued + parked) across all classes.
    max_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 1 << 30
    batch_window_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    inflight: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    publish_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    enqueue_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    page_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    sweep_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Minimum spacing of repeated alerts of one kind for one stream.
    alert_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    tx: ClassConfig = msgspec.field(default_factory=_tx)
    audit: ClassConfig = msgspec.field(default_factory=_audit)
    alert: ClassConfig = msgspec.field(default_factory=_alert)
    event: ClassConfig = msgspec.field(default_factory=_event)
    telemetry: ClassConfig = msgspec.field(default_factory=_telemetry)

    def __post_init__(self) -> None:
        for name in ("tx", "audit"):
            cls: ClassConfig = getattr(self, name)
            if cls.when_full != "refuse" or cls.ttl_s:
                raise ValueError(f"{name} messages are never dropped: when_full must be 'refuse', ttl_s 0")

    def classes(self) -> dict[str, ClassConfig]:
        return {name: getattr(self, name) for name in STREAMS}

    def by_priority(self) -> tuple[str, ...]:
        """Streams, highest priority first (ties in STREAMS order)."""
        classes = self.classes()
        return tuple(sorted(STREAMS, key=lambda s: -classes[s].priority))
