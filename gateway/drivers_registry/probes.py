"""Looking at a device's target without the daemon: a TCP endpoint, a character device."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from gateway.ops.checks import CheckResult, Verdict


async def tcp_probe(host: str, port: int, *, timeout: float) -> str | None:
    """None when a TCP connection opens, else why not."""
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection (nothing listens there)"
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"
    writer.close()
    try:
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        pass
    return None


async def url_endpoint(check: str, target: str, driver: str, fix: str, timeout: float) -> CheckResult:
    """A `scheme://host:port` target: does it accept a TCP connection?"""
    data = {"driver": driver, "source": "direct"}
    parts = urlsplit(target)
    if parts.hostname and parts.port:
        why = await tcp_probe(parts.hostname, parts.port, timeout=timeout)
        if why:
            return CheckResult(check, Verdict.FAIL, why, fix=fix, data=data)
        detail = f"{parts.hostname}:{parts.port} accepts connections"
        return CheckResult(check, Verdict.PASS, detail, data=data)
    return CheckResult(check, Verdict.SKIP, f"{target}: not probed without the daemon", data=data)


def char_device(path: Path, what: str, fix: str, name: str) -> CheckResult:
    """The device node exists, is a character device, and this user may open it."""
    data = {"path": str(path), "source": "direct"}
    try:
        st = path.stat()
    except FileNotFoundError:
        return CheckResult(name, Verdict.FAIL, f"{what} {path} does not exist", fix=fix, data=data)
    except OSError as err:
        return CheckResult(name, Verdict.FAIL, f"cannot stat {path}: {err.strerror}", fix=fix, data=data)
    if not stat.S_ISCHR(st.st_mode):
        return CheckResult(
            name, Verdict.WARN, f"{path} exists but is not a character device", fix=fix, data=data
        )
    if not os.access(path, os.R_OK | os.W_OK):
        return CheckResult(
            name,
            Verdict.WARN,
            f"{path} exists; this user (uid {os.getuid()}) cannot open it",
            fix=fix,
            data=data,
        )
    return CheckResult(name, Verdict.PASS, f"{what} {path} present (daemon down: state not known)", data=data)
