"""The V4L2 camera (`driver = "v4l2"`): its config table and how the gateway builds it."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated

import msgspec

from gateway.configbase import PositiveFloat, QueueConfig, Section
from gateway.drivers_registry.capabilities import CAMERA
from gateway.drivers_registry.entry import Built, DriverEntry
from gateway.drivers_registry.probes import char_device
from gateway.ops.checks import CheckResult


class V4l2Device(Section, tag_field="driver", tag="v4l2"):
    device: str = "/dev/video0"
    # "auto": ask the camera what it offers and take MJPEG, else raw YUYV (encoded to JPEG);
    # or an ffmpeg input format name to force one ("mjpeg", "yuyv422", ...).
    input_format: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{1,32}$")] = "auto"
    # Wanted frame size; the camera's nearest offered size is used when it lacks this one.
    width: Annotated[int, msgspec.Meta(ge=16, le=8192)] = 640
    height: Annotated[int, msgspec.Meta(ge=16, le=8192)] = 480
    # Frames dropped after the device opens, while auto-exposure settles (they come out dark).
    skip_frames: Annotated[int, msgspec.Meta(ge=0, le=300)] = 5
    timeout_s: PositiveFloat = 5.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 5_000_000
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)


async def build(name: str, cfg: V4l2Device, stack: AsyncExitStack) -> Built:
    """The camera (there is no simulated V4L2 camera)."""
    from drivers.camera.v4l2 import V4l2Camera

    camera = V4l2Camera(
        name,
        cfg.device,
        input_format=cfg.input_format,
        width=cfg.width,
        height=cfg.height,
        skip_frames=cfg.skip_frames,
        timeout=cfg.timeout_s,
        max_bytes=cfg.max_bytes,
    )
    return camera, None


def target(cfg: V4l2Device) -> str:
    return cfg.device


async def probe(check: str, cfg: V4l2Device, fix: str, timeout: float) -> CheckResult:
    """The video device node is there and this user may open it."""
    return char_device(Path(cfg.device), "video device", fix, check)


def fix(target: str) -> str:
    return f"check {target} exists (`v4l2-ctl --list-devices`); the gateway's user needs the video group"


def simulated(cfg: V4l2Device) -> bool:
    return False


ENTRY = DriverEntry(
    config=V4l2Device,
    capability=CAMERA,
    build=build,
    target=target,
    probe=probe,
    fix=fix,
    simulated=simulated,
)
