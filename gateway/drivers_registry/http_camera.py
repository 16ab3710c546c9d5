"""The HTTP snapshot camera (`driver = "http"`): its config table and how the gateway builds it."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Annotated, Any, Literal

import msgspec

from gateway.configbase import PositiveFloat, QueueConfig, Section
from gateway.drivers_registry.capabilities import CAMERA
from gateway.drivers_registry.entry import SIM_PREFIX, Built, DriverEntry, started
from gateway.drivers_registry.probes import url_endpoint
from gateway.ops.checks import CheckResult, Verdict


class HttpCameraDevice(Section, tag_field="driver", tag="http"):
    # A snapshot URL, or sim://NAME for the built-in simulated camera.
    url: str
    username: str = ""
    password: str = ""
    # "digest": answer only Digest (any WWW-Authenticate header, strongest algorithm); "auto": the
    # strongest scheme the camera offers, Basic included; "basic": send Basic at once.
    auth: Literal["auto", "basic", "digest"] = "digest"
    # An MJPEG stream URL (multipart/x-mixed-replace): "first_frame" takes one frame of it,
    # "refuse" fails with an error saying the URL is a stream, not a snapshot.
    stream: Literal["first_frame", "refuse"] = "first_frame"
    timeout_s: PositiveFloat = 5.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 5_000_000
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)


async def build(name: str, cfg: HttpCameraDevice, stack: AsyncExitStack) -> Built:
    """The camera; a sim:// URL starts the simulated camera first."""
    from drivers.camera.http import HttpCamera

    url = cfg.url
    simulator: Any = None
    if url.startswith(SIM_PREFIX):
        from drivers.camera.simulator import CameraSimulator

        simulator = CameraSimulator()
        url = await started(simulator, stack)
    camera = HttpCamera(
        name,
        url,
        username=cfg.username or None,
        password=cfg.password or None,
        auth=cfg.auth,
        stream=cfg.stream,
        timeout=cfg.timeout_s,
        max_bytes=cfg.max_bytes,
    )
    return camera, simulator


def target(cfg: HttpCameraDevice) -> str:
    return cfg.url


async def probe(check: str, cfg: HttpCameraDevice, fix: str, timeout: float) -> CheckResult:
    """The URL's host accepts a TCP connection."""
    if "://" in cfg.url:
        return await url_endpoint(check, cfg.url, "http", fix, timeout)
    data = {"driver": "http", "source": "direct"}
    return CheckResult(check, Verdict.SKIP, "not checked without the daemon", data=data)


def fix(target: str) -> str:
    return "check the camera answers at its URL and the credentials in config"


def simulated(cfg: HttpCameraDevice) -> bool:
    return cfg.url.startswith(SIM_PREFIX)


ENTRY = DriverEntry(
    config=HttpCameraDevice,
    capability=CAMERA,
    build=build,
    target=target,
    probe=probe,
    fix=fix,
    simulated=simulated,
)
