"""`edge-gateway diag`: named checks of config, key, clock, disk, daemon, devices, broker, outbox, systemd.

Each check ends pass / warn / fail / skip with a one-line detail and, for a failure, the fix. The
checks that need the running daemon ask it over its Unix socket; when it is down they say `skip`
(or check what they can directly) and the rest still run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import enum
import json
import os
import socket
import sqlite3
import ssl
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
import aiomqtt
from cryptography import x509

from gateway.config import (
    EscposDevice,
    GatewayConfig,
    HttpCameraDevice,
    PcscDevice,
    SamvDevice,
    V4l2Device,
    driver_name,
    load_config,
)
from gateway.errors import ConfigError, GatewayError
from gateway.ops import BUILD_DATE

SIM_PREFIX: Final = "sim://"
UNIT: Final = "edge-gateway.service"
SYSTEMD_DIR: Final = Path("/run/systemd/system")
TIMESYNC_FLAG: Final = Path("/run/systemd/timesync/synchronized")
PCSCD_SOCKET: Final = Path("/run/pcscd/pcscd.comm")

DISK_WARN: Final = 0.10
DISK_FAIL: Final = 0.02
CERT_WARN_DAYS: Final = 30
OUTBOX_WARN_FILL: Final = 0.80
OUTBOX_FAIL_FILL: Final = 0.95
# tx/audit undelivered for longer than this means the uplink has been down for a while.
OUTBOX_WARN_AGE_S: Final = 3600.0
DEFAULT_TIMEOUT: Final = 3.0

CHECK_NAMES: Final = (
    "config",
    "key",
    "clock",
    "disk",
    "daemon",
    "device",
    "station",
    "broker",
    "outbox",
    "systemd",
)
START_FIX: Final = f"start it: `systemctl start {UNIT}` (or `edge-gateway run -c CONFIG` by hand)"


class Verdict(enum.StrEnum):
    """How one check ended."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One named check: its verdict, a one-line detail, the fix when it failed, and raw figures."""

    name: str
    status: Verdict
    detail: str
    fix: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
            "data": dict(self.data),
        }


class DiagError(GatewayError):
    """Root of the diag errors."""


class DiagUsageError(DiagError, ValueError):
    """The command line asked for something diag cannot do (an unknown check name)."""


class DaemonUnreachable(DiagError):
    """The daemon's socket did not answer /v1/status; `fix` says what to do."""

    def __init__(self, message: str, *, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class DaemonTimeout(DaemonUnreachable, TimeoutError):
    """The socket accepted the connection but /v1/status did not answer in time."""


@dataclass(frozen=True, slots=True)
class DiagReport:
    """Every check that ran, in order; the exit code follows from them."""

    checks: tuple[CheckResult, ...]
    config_ok: bool = True
    status: Mapping[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        if not self.config_ok:
            return 2
        return 1 if any(c.status is Verdict.FAIL for c in self.checks) else 0

    def counts(self) -> dict[str, int]:
        return {v.value: sum(1 for c in self.checks if c.status is v) for v in Verdict}

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "summary": self.counts(),
            "checks": [c.as_dict() for c in self.checks],
        }


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    return f"{_duration(max(0.0, now - then))} ago"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ------------------------------------------------------------------------------------ config, key


def check_config(config_path: str | None) -> tuple[CheckResult, GatewayConfig | None]:
    """Load and validate the config the daemon would use."""
    try:
        config = load_config(config_path)
    except ConfigError as err:
        return (
            CheckResult(
                "config",
                Verdict.FAIL,
                str(err),
                fix="correct the named key (`edge-gateway config check -c FILE` repeats the error)",
            ),
            None,
        )
    from gateway.startup import file_problems

    problems = file_problems(config)
    if problems:
        # The daemon refuses to start on these (exit 2): say which key, which file, what to do.
        first = problems[0]
        detail = "; ".join(f"{p.key}: {p.path}: {p.problem}" for p in problems)
        data = {"source": config.source, "files": [dataclasses.asdict(p) for p in problems]}
        return CheckResult("config", Verdict.FAIL, detail, fix=first.fix, data=data), config
    detail = f"{config.source} is valid (node {config.node.id}, {len(config.devices)} device(s))"
    return CheckResult("config", Verdict.PASS, detail, data={"source": config.source}), config


def check_key(config: GatewayConfig) -> CheckResult:
    """The node signing key exists, parses, and only its owner can read it."""
    from gateway.uplink.keys import (
        KeyFormatError,
        KeyMissingError,
        KeyPermissionError,
        KeyStoreError,
        load_key,
    )

    path = config.key_path
    data = {"path": str(path)}
    try:
        key = load_key(path, config.node.id)
    except KeyMissingError:
        when = (
            " (the daemon makes it at first start: node.auto_init_key)" if config.node.auto_init_key else ""
        )
        return CheckResult(
            "key",
            Verdict.WARN if config.node.auto_init_key else Verdict.FAIL,
            f"no node key at {path}{when}",
            fix=f"create it: `edge-gateway keys init -c {config.source}`",
            data=data,
        )
    except KeyPermissionError as err:
        return CheckResult("key", Verdict.FAIL, str(err), fix=f"`chmod 600 {path}`", data=data)
    except KeyFormatError as err:
        return CheckResult(
            "key",
            Verdict.FAIL,
            str(err),
            fix="restore the key from backup, or `edge-gateway keys rotate` and re-register the new kid",
            data=data,
        )
    except KeyStoreError as err:
        cause = err.__cause__
        if isinstance(cause, PermissionError):
            return CheckResult(
                "key",
                Verdict.WARN,
                f"cannot read {path} as uid {os.getuid()}: {cause.strerror}",
                fix="run diag as root or as the gateway's user (`sudo -u edge-gateway edge-gateway diag`)",
                data=data,
            )
        return CheckResult("key", Verdict.FAIL, str(err), fix=f"check {path} and its directory", data=data)
    mode = stat.S_IMODE(path.stat().st_mode)
    return CheckResult(
        "key", Verdict.PASS, f"{path} (mode {mode:04o}), kid {key.kid}", data={**data, "kid": key.kid}
    )


# ------------------------------------------------------------------------------------ clock


async def clock_synchronised(*, timeout: float = DEFAULT_TIMEOUT) -> bool | None:
    """What timedatectl (or systemd-timesyncd's flag file) says; None when nothing reports."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "timedatectl",
            "show",
            "-p",
            "NTPSynchronized",
            "--value",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        proc = None
    if proc is not None:
        try:
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            out = b""
        answer = out.decode(errors="replace").strip()
        if proc.returncode == 0 and answer in ("yes", "no"):
            return answer == "yes"
    if TIMESYNC_FLAG.exists():
        return True
    return None


async def check_clock(
    *,
    now: dt.datetime | None = None,
    build_date: dt.date = BUILD_DATE,
    synchronised: Callable[[], Awaitable[bool | None]] = clock_synchronised,
) -> CheckResult:
    """The clock is not before the build date and, where reported, NTP-synchronised."""
    now = now or dt.datetime.now(dt.UTC)
    synced = await synchronised()
    data = {"now": now.isoformat(), "build_date": build_date.isoformat(), "synchronised": synced}
    if now.date() < build_date:
        return CheckResult(
            "clock",
            Verdict.FAIL,
            f"the clock says {now:%Y-%m-%d %H:%M} UTC, before this build ({build_date})",
            fix="set the time: `timedatectl set-ntp true` (or `timedatectl set-time`); TLS and "
            "envelope timestamps depend on it",
            data=data,
        )
    if synced is False:
        return CheckResult(
            "clock",
            Verdict.WARN,
            f"{now:%Y-%m-%d %H:%M:%S} UTC, not NTP-synchronised",
            fix="`timedatectl set-ntp true` and check the NTP servers are reachable",
            data=data,
        )
    note = "NTP-synchronised" if synced else "synchronisation not reported (no timedated/timesyncd)"
    return CheckResult("clock", Verdict.PASS, f"{now:%Y-%m-%d %H:%M:%S} UTC, {note}", data=data)


# ------------------------------------------------------------------------------------ disk


def disk_verdict(free_fraction: float, inode_fraction: float | None) -> Verdict:
    """fail under 2% free (space or inodes), warn under 10%."""
    worst = min(free_fraction, inode_fraction if inode_fraction is not None else 1.0)
    if worst < DISK_FAIL:
        return Verdict.FAIL
    if worst < DISK_WARN:
        return Verdict.WARN
    return Verdict.PASS


def check_disk(state_dir: Path) -> CheckResult:
    """Free space and inodes on the file system holding the state dir (outbox, keys, logs)."""
    target = state_dir
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        st = os.statvfs(target)
    except OSError as err:
        return CheckResult(
            "disk", Verdict.FAIL, f"cannot stat {target}: {err.strerror}", fix="check the mount"
        )
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    free_fraction = free / total if total else 0.0
    # Some file systems (btrfs) report no inode limit at all.
    inode_fraction = st.f_favail / st.f_files if st.f_files else None
    verdict = disk_verdict(free_fraction, inode_fraction)
    inodes = f", {inode_fraction:.0%} inodes free" if inode_fraction is not None else ""
    missing = "" if target == state_dir else f" ({state_dir} does not exist yet; checked {target})"
    detail = f"{_size(free)} of {_size(total)} free ({free_fraction:.1%}){inodes}{missing}"
    fix = None
    if verdict is not Verdict.PASS:
        fix = (
            f"free space on the file system of {state_dir}: old logs (`journalctl --vacuum-size=`), "
            "core dumps; a full outbox means the uplink is down (see the broker check)"
        )
    data = {
        "path": str(target),
        "total_bytes": total,
        "free_bytes": free,
        "free_fraction": free_fraction,
        "inodes_free_fraction": inode_fraction,
    }
    return CheckResult("disk", verdict, detail, fix=fix, data=data)


# ------------------------------------------------------------------------------------ daemon


async def fetch_status(socket_path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """GET /v1/status over the daemon's Unix socket; DaemonUnreachable says why not."""
    connector = aiohttp.UnixConnector(path=str(socket_path))
    client_timeout = aiohttp.ClientTimeout(total=timeout, connect=timeout, sock_read=timeout)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=client_timeout) as client,
            client.get("http://localhost/v1/status") as resp,
        ):
            if resp.status != 200:
                raise DaemonUnreachable(
                    f"/v1/status answered HTTP {resp.status}",
                    fix=f"see the daemon's log: `journalctl -u {UNIT} -n 100`",
                )
            body = await resp.json()
    except aiohttp.ClientConnectorError as err:
        cause = err.os_error
        if isinstance(cause, FileNotFoundError):
            raise DaemonUnreachable(
                f"no socket at {socket_path}: the daemon is not running", fix=START_FIX
            ) from err
        if isinstance(cause, ConnectionRefusedError):
            raise DaemonUnreachable(
                f"{socket_path} exists but nothing listens on it (stale socket after a crash?)",
                fix=START_FIX,
            ) from err
        if isinstance(cause, PermissionError):
            raise DaemonUnreachable(
                f"no permission to connect to {socket_path} as uid {os.getuid()}",
                fix="run diag as root or as a user the socket mode / api.allowed_uids admits",
            ) from err
        raise DaemonUnreachable(f"cannot connect to {socket_path}: {cause}", fix=START_FIX) from err
    except TimeoutError as err:
        raise DaemonTimeout(
            f"{socket_path} accepted but /v1/status did not answer within {timeout:g} s (event loop stuck?)",
            fix=f"`systemctl restart {UNIT}` and look at `journalctl -u {UNIT}` for loop-lag warnings",
        ) from err
    except (aiohttp.ClientError, ValueError) as err:
        raise DaemonUnreachable(
            f"/v1/status failed: {err}", fix=f"see the daemon's log: `journalctl -u {UNIT} -n 100`"
        ) from err
    if not isinstance(body, dict):
        raise DaemonUnreachable("/v1/status is not a JSON object", fix="is another program on this socket?")
    return body


def check_daemon(
    socket_path: Path, status: Mapping[str, Any] | None, error: DaemonUnreachable | None, *, now: float
) -> CheckResult:
    """Turn the /v1/status outcome into the `daemon` check."""
    if status is None:
        reason = str(error) if error else "not asked"
        return CheckResult(
            "daemon",
            Verdict.FAIL,
            reason,
            fix=error.fix if error else START_FIX,
            data={"socket": str(socket_path)},
        )
    started = status.get("started_at")
    up = f", up {_duration(now - started)}" if isinstance(started, int | float) else ""
    loop = status.get("loop") or {}
    lag = loop.get("lag_s") if isinstance(loop, dict) else None
    lag_text = f", loop lag {lag * 1000:.0f} ms" if isinstance(lag, int | float) else ""
    who = f"edge-gateway {status.get('version', '?')} (node {status.get('node', '?')})"
    detail = f"{socket_path}: {who}{up}{lag_text}"
    return CheckResult(
        "daemon", Verdict.PASS, detail, data={"socket": str(socket_path), "version": status.get("version")}
    )


# ------------------------------------------------------------------------------------ devices

_STATE_VERDICT: Final = {
    "online": Verdict.PASS,
    "busy": Verdict.PASS,
    "user_error": Verdict.WARN,
    "offline": Verdict.FAIL,
    "no_device": Verdict.FAIL,
    "hardware_error": Verdict.FAIL,
}


def _device_fix(driver: str, target: str) -> str:
    if driver in ("samv", "escpos"):
        return (
            f"check the cable and that {target} exists (`ls -l {target}`); the gateway's user needs "
            "the dialout group; `edge-gateway` reopens the port by itself once it is back"
        )
    if driver == "pcsc":
        return "check pcscd runs (`systemctl status pcscd`) and the reader is plugged (`pcsc_scan`)"
    if driver == "v4l2":
        return f"check {target} exists (`v4l2-ctl --list-devices`); the gateway's user needs the video group"
    if driver == "http":
        return "check the camera answers at its URL and the credentials in config"
    return "see the daemon's log for this device"


def _device_target(cfg: Any) -> str:
    if isinstance(cfg, SamvDevice | EscposDevice):
        return cfg.port
    if isinstance(cfg, V4l2Device):
        return cfg.device
    if isinstance(cfg, HttpCameraDevice):
        return cfg.url
    if isinstance(cfg, PcscDevice):
        return cfg.reader or "first PC/SC reader"
    return "?"


def device_from_status(item: Mapping[str, Any], config: GatewayConfig, *, now: float) -> CheckResult:
    """One device as the daemon reports it: state, reason, last error, last success."""
    name = str(item.get("name", "?"))
    state = str(item.get("state", "unknown"))
    driver = str(item.get("driver", ""))
    cfg = config.devices.get(name)
    target = _device_target(cfg) if cfg is not None else "?"
    verdict = _STATE_VERDICT.get(state, Verdict.WARN)
    parts = [state]
    if item.get("reason"):
        parts[0] += f" ({item['reason']})"
    if item.get("simulated"):
        parts.append("simulated")
    last_error = item.get("last_error")
    if last_error:
        parts.append(f"last error {_ago(item.get('last_error_at'), now)}: {last_error}")
    parts.append(f"last success {_ago(item.get('last_success_at'), now)}")
    queue = item.get("queue")
    if isinstance(queue, dict) and queue.get("queued"):
        parts.append(f"{queue['queued']} queued")
    fix = (
        _device_fix(driver or (driver_name(cfg) if cfg else ""), target)
        if verdict is not Verdict.PASS
        else None
    )
    data = {
        k: item.get(k)
        for k in ("state", "reason", "driver", "last_error", "last_error_at", "last_success_at")
    }
    return CheckResult(f"device:{name}", verdict, "; ".join(parts), fix=fix, data=data)


async def _tcp_probe(host: str, port: int, *, timeout: float) -> str | None:
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


def _char_device(path: Path, what: str, fix: str, name: str) -> CheckResult:
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


async def device_direct(name: str, cfg: Any, *, timeout: float) -> CheckResult:
    """Without the daemon: does what the config points at exist?"""
    check = f"device:{name}"
    driver = driver_name(cfg)
    target = _device_target(cfg)
    fix = _device_fix(driver, target)
    data = {"driver": driver, "source": "direct"}
    if target.startswith(SIM_PREFIX):
        return CheckResult(check, Verdict.PASS, f"simulated ({target})", data=data)
    if isinstance(cfg, SamvDevice | EscposDevice | HttpCameraDevice) and "://" in target:
        parts = urlsplit(target)
        if parts.hostname and parts.port:
            why = await _tcp_probe(parts.hostname, parts.port, timeout=timeout)
            if why:
                return CheckResult(check, Verdict.FAIL, why, fix=fix, data=data)
            return CheckResult(
                check, Verdict.PASS, f"{parts.hostname}:{parts.port} accepts connections", data=data
            )
        return CheckResult(check, Verdict.SKIP, f"{target}: not probed without the daemon", data=data)
    if isinstance(cfg, SamvDevice | EscposDevice):
        return _char_device(Path(target), "serial port", fix, check)
    if isinstance(cfg, V4l2Device):
        return _char_device(Path(target), "video device", fix, check)
    if isinstance(cfg, PcscDevice):
        if PCSCD_SOCKET.exists():
            return CheckResult(
                check,
                Verdict.PASS,
                f"pcscd socket present; {target} not checked without the daemon",
                data=data,
            )
        return CheckResult(
            check, Verdict.FAIL, f"pcscd is not running (no {PCSCD_SOCKET})", fix=fix, data=data
        )
    return CheckResult(check, Verdict.SKIP, "not checked without the daemon", data=data)


async def check_devices(
    config: GatewayConfig,
    status: Mapping[str, Any] | None,
    *,
    names: Sequence[str] | None = None,
    now: float,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[CheckResult]:
    """Each device: from /v1/status when the daemon answers, else directly from config."""
    wanted = list(names) if names is not None else list(config.devices)
    results: list[CheckResult] = []
    if status is not None and isinstance(status.get("devices"), list):
        reported = {str(d.get("name")): d for d in status["devices"] if isinstance(d, dict)}
        for name in wanted:
            if name in reported:
                results.append(device_from_status(reported[name], config, now=now))
            else:
                results.append(
                    CheckResult(
                        f"device:{name}",
                        Verdict.FAIL,
                        "configured but the daemon does not run it (config changed since it started?)",
                        fix=f"`systemctl restart {UNIT}` to apply the config",
                    )
                )
        if names is None:
            results.extend(
                device_from_status(d, config, now=now) for n, d in reported.items() if n not in config.devices
            )
        return results
    return list(
        await asyncio.gather(*(device_direct(name, config.devices[name], timeout=timeout) for name in wanted))
    )


def check_stations(config: GatewayConfig, devices: Sequence[CheckResult]) -> list[CheckResult]:
    """Each configured station: can it serve a citizen? Every kind it uses needs a working device
    (a pool, at least one working member). Judged from the device checks."""
    verdicts = {r.name.removeprefix("device:"): r.status for r in devices}
    results = []
    for name, station in config.stations.items():
        worst = Verdict.PASS
        parts: list[str] = []
        broken: list[str] = []
        for kind, target in station.uses().items():
            members = config.pools[target].devices if target in config.pools else [target]
            ok = [m for m in members if verdicts.get(m) in (Verdict.PASS, Verdict.SKIP)]
            broken.extend(m for m in members if m not in ok)
            if not ok:
                worst = Verdict.FAIL
            elif len(ok) < len(members) and worst is Verdict.PASS:
                worst = Verdict.WARN
            label = f"pool {target} {len(ok)}/{len(members)}" if target in config.pools else target
            parts.append(f"{kind} {label}{'' if ok else ' DOWN'}")
        title = f"{station.label}: " if station.label else ""
        fix = f"see {', '.join(f'device:{d}' for d in broken)}" if broken else None
        data = {"label": station.label, "uses": station.uses()}
        results.append(CheckResult(f"station:{name}", worst, title + "; ".join(parts), fix=fix, data=data))
    return results


# ------------------------------------------------------------------------------------ broker


def _cert_summary(cert: x509.Certificate, now: dt.datetime) -> tuple[str, float]:
    days = (cert.not_valid_after_utc - now).total_seconds() / 86_400
    return cert.subject.rfc4514_string(), days


def _cert_files_verdict(
    files: Mapping[str, str], now: dt.datetime
) -> tuple[Verdict, list[str], list[dict[str, Any]], str | None]:
    """Expiry of our own certificate files (CA bundle, client certificate)."""
    verdict = Verdict.PASS
    notes: list[str] = []
    certs: list[dict[str, Any]] = []
    fix = None
    for role, name in files.items():
        if not name:
            continue
        try:
            loaded = x509.load_pem_x509_certificates(Path(name).read_bytes())
        except (OSError, ValueError) as err:
            return Verdict.FAIL, [f"cannot read {role} {name}: {err}"], certs, f"check uplink.{role}"
        for cert in loaded:
            subject, days = _cert_summary(cert, now)
            certs.append({"role": role, "subject": subject, "days_left": round(days, 1)})
            if days < 0:
                verdict = Verdict.FAIL
                notes.append(f"{role} {subject} expired {-days:.0f} days ago")
                fix = f"renew {name}"
            elif days < CERT_WARN_DAYS and verdict is not Verdict.FAIL:
                verdict = Verdict.WARN
                notes.append(f"{role} {subject} expires in {days:.0f} days")
                fix = f"renew {name} before it expires"
    return verdict, notes, certs, fix


async def check_broker(
    config: GatewayConfig,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    now: dt.datetime | None = None,
) -> CheckResult:
    """DNS, TCP, TLS (chain and expiry) and an MQTT v5 connect with the node's credentials."""
    from gateway.simulation import SIM_BROKER
    from gateway.uplink.mqtt import BrokerAddress, LinkConfigError, tls_context

    uplink = config.uplink
    if not uplink.broker:
        commands = "" if uplink.cloud_keys else "; no uplink.cloud_keys, so cloud commands are refused"
        return CheckResult(
            "broker",
            Verdict.WARN,
            f"uplink.broker is empty: the MQTT link is off, messages wait in the outbox{commands}",
            fix="connect to the cloud: copy the broker CA, the node certificate and key (and the cloud's "
            "public JWK) to /etc/edge-gateway and set uplink.broker, ca_file, client_cert, client_key "
            "and cloud_keys (docs/install.md, 'Connect to the cloud')",
        )
    if uplink.broker == SIM_BROKER:
        return CheckResult(
            "broker", Verdict.SKIP, "uplink.broker is sim://cloud: the in-process development cloud"
        )
    now = now or dt.datetime.now(dt.UTC)
    try:
        address = BrokerAddress.parse(uplink.broker)
    except LinkConfigError as err:
        return CheckResult("broker", Verdict.FAIL, str(err), fix="correct uplink.broker")
    host, port = address.host, address.port
    where = f"{host}:{port}"
    steps: dict[str, Any] = {"broker": uplink.broker}

    def fail(detail: str, fix: str) -> CheckResult:
        return CheckResult("broker", Verdict.FAIL, detail, fix=fix, data={"steps": dict(steps)})

    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        steps["dns"] = "timeout"
        return fail(
            f"DNS lookup of {host} took over {timeout:g} s", "check the resolver (`resolvectl status`)"
        )
    except OSError as err:
        steps["dns"] = str(err)
        return fail(
            f"cannot resolve {host}: {err}", "check the host name in uplink.broker and DNS on this box"
        )
    steps["dns"] = sorted({str(info[4][0]) for info in infos})

    why = await _tcp_probe(host, port, timeout=timeout)
    if why:
        steps["tcp"] = why
        return fail(
            f"TCP connect to {where} failed: {why}",
            "is the broker running and reachable from this box? check uplink.broker, the broker's "
            "listener and any firewall on the way; messages wait in the outbox meanwhile",
        )
    steps["tcp"] = "ok"

    verdict = Verdict.PASS
    notes: list[str] = []
    fix: str | None = None
    tls: ssl.SSLContext | None = None
    if address.tls:
        try:
            tls = tls_context(
                ca_file=uplink.ca_file, client_cert=uplink.client_cert, client_key=uplink.client_key
            )
        except LinkConfigError as err:
            steps["tls"] = str(err)
            return fail(str(err), "check uplink.ca_file, client_cert and client_key exist and are PEM")
        try:
            async with asyncio.timeout(timeout):
                _reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host)
        except ssl.SSLCertVerificationError as err:
            steps["tls"] = err.verify_message
            return fail(
                f"TLS: the broker's certificate does not verify: {err.verify_message}",
                "the broker certificate must chain to uplink.ca_file and name the host in uplink.broker",
            )
        except (ssl.SSLError, OSError, TimeoutError) as err:
            steps["tls"] = str(err) or type(err).__name__
            return fail(
                f"TLS handshake with {where} failed: {steps['tls']}", "check the broker's TLS listener"
            )
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        version = ssl_object.version() if ssl_object is not None else None
        writer.close()
        try:
            async with asyncio.timeout(timeout):
                await writer.wait_closed()
        except (TimeoutError, OSError, ssl.SSLError):
            pass
        if der:
            peer = x509.load_der_x509_certificate(der)
            subject, days = _cert_summary(peer, now)
            steps["tls"] = {"version": version, "subject": subject, "issuer": peer.issuer.rfc4514_string()}
            steps["tls"]["days_left"] = round(days, 1)
            if days < CERT_WARN_DAYS:
                verdict = Verdict.WARN
                notes.append(f"broker certificate expires in {days:.0f} days")
                fix = "renew the broker's certificate"
        own_verdict, own_notes, certs, own_fix = _cert_files_verdict(
            {"ca_file": uplink.ca_file, "client_cert": uplink.client_cert}, now
        )
        steps["certificates"] = certs
        notes.extend(own_notes)
        if own_verdict is Verdict.FAIL:
            return fail("; ".join(own_notes), own_fix or "renew the certificate")
        if own_verdict is Verdict.WARN:
            verdict, fix = Verdict.WARN, own_fix

    # A distinct client id: reusing the node id would take over the running daemon's session.
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"{config.node.id}-diag-{os.getpid()}",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=tls,
        timeout=timeout,
        keepalive=max(5, int(timeout * 2)),
    )
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout + 1):
            async with client:
                pass
    except aiomqtt.MqttCodeError as err:
        steps["mqtt"] = str(err)
        return fail(
            f"MQTT connect to {where} refused: {err}",
            "the broker refused the node's credentials: check client_cert is issued for this node and "
            "the broker's ACL admits it",
        )
    except (aiomqtt.MqttError, TimeoutError, OSError) as err:
        steps["mqtt"] = str(err) or type(err).__name__
        return fail(
            f"MQTT connect to {where} failed: {steps['mqtt']}", "check the broker's MQTT listener and logs"
        )
    steps["mqtt"] = {"connect_s": round(time.monotonic() - started, 3)}
    scheme = "mqtts" if address.tls else "mqtt"
    detail = f"{scheme}://{where}: DNS, TCP{', TLS' if address.tls else ''} and MQTT v5 connect ok"
    if notes:
        detail += "; " + "; ".join(notes)
    return CheckResult("broker", verdict, detail, fix=fix, data={"steps": steps})


# ------------------------------------------------------------------------------------ outbox


def _outbox_settings(config: GatewayConfig) -> tuple[Path, int]:
    """Where the outbox file is and its byte quota (the [outbox] table, when config has one)."""
    outbox = getattr(config, "outbox", None)
    name = getattr(outbox, "file", "outbox.sqlite3")
    max_bytes = int(getattr(outbox, "max_bytes", 1 << 30))
    path = Path(name)
    return (path if path.is_absolute() else config.state_dir / path), max_bytes


def read_outbox(path: Path, *, now: float) -> dict[str, Any]:
    """Backlog per class from the SQLite file, opened read-only (the daemon may be writing it)."""
    uri = f"file:{quote(str(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=1.0)
    try:
        rows = conn.execute(
            "SELECT stream, state, count(*), coalesce(sum(size), 0), min(created) FROM messages "
            "GROUP BY stream, state"
        ).fetchall()
    finally:
        conn.close()
    classes: dict[str, dict[str, Any]] = {}
    for stream, state, count, size, oldest in rows:
        entry = classes.setdefault(str(stream), {"count": 0, "bytes": 0, "oldest_age_s": None, "parked": 0})
        if state == 0:
            entry["count"] += int(count)
            entry["bytes"] += int(size)
            entry["oldest_age_s"] = max(0.0, now - float(oldest)) if oldest is not None else None
        else:
            entry["parked"] += int(count)
            entry["bytes"] += int(size)
    return {
        "classes": classes,
        "count": sum(c["count"] for c in classes.values()),
        "bytes": sum(c["bytes"] for c in classes.values()),
    }


def outbox_verdict(stats: Mapping[str, Any], max_bytes: int) -> tuple[Verdict, str, str | None]:
    """Judge a backlog: quota fill, age of undelivered tx/audit, messages the broker rejected."""
    classes = stats.get("classes") or {}
    total = int(stats.get("bytes") or 0)
    limit = int(stats.get("max_bytes") or max_bytes)
    fill = total / limit if limit else 0.0
    parts = []
    verdict = Verdict.PASS
    fix: str | None = None
    parked = 0
    for name in sorted(classes):
        entry = classes[name]
        if not isinstance(entry, dict):
            continue
        count = int(entry.get("count") or 0)
        parked += int(entry.get("parked") or 0)
        age = entry.get("oldest_age_s")
        if count:
            oldest = f", oldest {_duration(float(age))}" if isinstance(age, int | float) else ""
            parts.append(f"{name} {count} ({_size(int(entry.get('bytes') or 0))}{oldest})")
        if name in ("tx", "audit") and isinstance(age, int | float) and age > OUTBOX_WARN_AGE_S:
            verdict = Verdict.WARN
            fix = "the uplink has not delivered for a while: see the broker check"
    backlog = ", ".join(parts) if parts else "empty"
    detail = f"{backlog}; {_size(total)} of {_size(limit)} ({fill:.1%})"
    if parked:
        detail += f"; {parked} rejected by the broker (parked)"
        if verdict is Verdict.PASS:
            verdict = Verdict.WARN
            fix = (
                "the broker refused some messages (PUBACK error): check its ACL for this node's topics,"
                " then send them again (cloud command outbox.requeue, or a technician's"
                " POST .../maintenance/outbox/requeue)"
            )
    if fill >= OUTBOX_FAIL_FILL:
        return (
            Verdict.FAIL,
            detail,
            "the outbox is full and refuses messages: restore the uplink (broker check)",
        )
    if fill >= OUTBOX_WARN_FILL:
        return Verdict.WARN, detail, "the outbox is filling: restore the uplink before it refuses messages"
    return verdict, detail, fix


async def check_outbox(config: GatewayConfig, status: Mapping[str, Any] | None, *, now: float) -> CheckResult:
    """Backlog, bytes and oldest age per message class: from /v1/status, else the SQLite file."""
    path, max_bytes = _outbox_settings(config)
    reported = status.get("outbox") if status is not None else None
    source = "daemon"
    if isinstance(reported, dict) and "classes" in reported:
        stats: dict[str, Any] = reported
    else:
        source = "file"
        if not path.exists():
            return CheckResult("outbox", Verdict.SKIP, f"no outbox at {path} yet (nothing queued so far)")
        try:
            stats = await asyncio.to_thread(read_outbox, path, now=now)
        except sqlite3.Error as err:
            return CheckResult(
                "outbox",
                Verdict.FAIL,
                f"cannot read {path}: {err}",
                fix="the daemon moves a corrupt outbox aside and starts fresh at its next start: "
                f"`systemctl restart {UNIT}`",
            )
    verdict, detail, fix = outbox_verdict(stats, max_bytes)
    reported_incidents = stats.get("incidents")
    if not isinstance(reported_incidents, list):
        # The daemon is down (or older): the journal file says the same.
        from gateway.uplink import incidents as journal

        reported_incidents = [i.as_dict() for i in journal.open_incidents(journal.journal_path(path))]
        stats = {**stats, "incidents": reported_incidents}
    if reported_incidents:
        verdict, detail, fix = incident_verdict(reported_incidents, verdict, detail, fix)
    return CheckResult(
        "outbox", verdict, f"{detail} (from the {source})", fix=fix, data={"source": source, **stats}
    )


def _incident_text(incident: Mapping[str, Any]) -> str:
    """One incident in a line: what happened, when, what may be lost, per stream."""
    at = incident.get("at")
    when = dt.datetime.fromtimestamp(float(at), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "?"
    parts = []
    for stream, span in sorted((incident.get("unaccounted") or {}).items()):
        first, last = span
        parts.append(f"{stream} seq {first}" if first == last else f"{stream} seqs {first}-{last}")
    unreadable = incident.get("unreadable") or {}
    parts += [f"{stream} {count} unreadable row(s)" for stream, count in sorted(unreadable.items())]
    lost = int(incident.get("possibly_lost") or 0)
    what = "; ".join(parts) if parts else "nothing lost"
    salvaged = int(incident.get("salvaged") or 0)
    kept = f", {salvaged} message(s) salvaged" if incident.get("kind") == "corrupt" else ""
    return f"{incident.get('kind')} at {when}: {lost} possibly lost ({what}){kept}"


def incident_verdict(
    incidents: list[Mapping[str, Any]], verdict: Verdict, detail: str, fix: str | None
) -> tuple[Verdict, str, str | None]:
    """Storage incidents not acknowledged yet: FAIL when messages may be lost, else WARN."""
    red = any(int(i.get("possibly_lost") or 0) for i in incidents)
    texts = "; ".join(_incident_text(i) for i in incidents)
    detail = f"{detail}; storage incident(s) not acknowledged: {texts}"
    advice = (
        "the outbox came back from a storage fault (docs/ops.md, 'Storage faults'): compare the "
        "seqs named here with the cloud's gap report, then acknowledge with "
        "`edge-gateway outbox-ack -c CONFIG`"
    )
    if red or verdict is Verdict.FAIL:
        return Verdict.FAIL, detail, advice
    return Verdict.WARN, detail, advice


# ------------------------------------------------------------------------------------ systemd


def parse_properties(text: str) -> dict[str, str]:
    """`systemctl show` output: KEY=VALUE lines."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


def systemd_verdict(props: Mapping[str, str], unit: str = UNIT) -> CheckResult:
    """Judge the unit's state, watchdog and restart count."""
    load = props.get("LoadState", "")
    active = props.get("ActiveState", "unknown")
    sub = props.get("SubState", "")
    watchdog = props.get("WatchdogUSec", "0")
    restarts = props.get("NRestarts", "0")
    data = dict(props)
    if load == "not-found":
        return CheckResult("systemd", Verdict.SKIP, f"{unit} is not installed (run by hand?)", data=data)
    if active == "failed":
        return CheckResult(
            "systemd",
            Verdict.FAIL,
            f"{unit} failed ({props.get('Result', sub)})",
            fix=f"`journalctl -u {unit} -b -n 200` for why, then `systemctl restart {unit}`",
            data=data,
        )
    if active != "active":
        return CheckResult(
            "systemd", Verdict.WARN, f"{unit} is {active} ({sub})", fix=f"`systemctl start {unit}`", data=data
        )
    watchdog_off = watchdog in ("0", "infinity", "")
    detail = f"{unit} {active} ({sub}), watchdog {'off' if watchdog_off else watchdog}, {restarts} restart(s)"
    if watchdog_off:
        return CheckResult(
            "systemd",
            Verdict.WARN,
            detail,
            fix="enable the watchdog: WatchdogSec= in the unit (a hung loop is then restarted)",
            data=data,
        )
    if restarts.isdigit() and int(restarts) > 0:
        return CheckResult(
            "systemd", Verdict.WARN, detail, fix=f"see why it restarted: `journalctl -u {unit} -b`", data=data
        )
    return CheckResult("systemd", Verdict.PASS, detail, data=data)


async def check_systemd(
    *,
    unit: str = UNIT,
    systemd_dir: Path = SYSTEMD_DIR,
    timeout: float = DEFAULT_TIMEOUT,
) -> CheckResult:
    """The unit's state and watchdog, where systemd runs."""
    if not await asyncio.to_thread(systemd_dir.is_dir):
        return CheckResult("systemd", Verdict.SKIP, f"systemd is not running here (no {systemd_dir})")
    try:
        proc = await asyncio.create_subprocess_exec(
            "systemctl",
            "show",
            unit,
            "-p",
            "LoadState,ActiveState,SubState,Result,WatchdogUSec,NRestarts,MainPID",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as err:
        return CheckResult("systemd", Verdict.SKIP, f"cannot run systemctl: {err.strerror}")
    try:
        async with asyncio.timeout(timeout):
            out, err_out = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return CheckResult("systemd", Verdict.WARN, f"systemctl did not answer within {timeout:g} s")
    if proc.returncode != 0:
        return CheckResult("systemd", Verdict.SKIP, f"systemctl show failed: {err_out.decode().strip()}")
    return systemd_verdict(parse_properties(out.decode(errors="replace")), unit)


# ------------------------------------------------------------------------------------ runner


@dataclass(frozen=True, slots=True)
class Selection:
    """Which checks `--only` asked for; device names are matched after the config loads."""

    names: frozenset[str]
    devices: frozenset[str]
    all_devices: bool

    @classmethod
    def parse(cls, only: Sequence[str] | None) -> Selection:
        if not only:
            return cls(frozenset(CHECK_NAMES), frozenset(), True)
        names: set[str] = set()
        devices: set[str] = set()
        for item in only:
            for token in (t.strip() for t in item.split(",")):
                if not token:
                    continue
                base, _, device = token.partition(":")
                if base not in CHECK_NAMES or (device and base != "device"):
                    raise DiagUsageError(
                        f"unknown check {token!r}: choose from {', '.join(CHECK_NAMES)} or device:NAME"
                    )
                names.add(base)
                if device:
                    devices.add(device)
                elif base == "device":
                    devices.clear()
        all_devices = "device" in names and not devices
        return cls(frozenset(names), frozenset(devices), all_devices)

    def wants(self, name: str) -> bool:
        return name in self.names


async def diagnose(
    config_path: str | None,
    *,
    only: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> DiagReport:
    """Run the selected checks; independent ones run concurrently, the output keeps a fixed order."""
    selection = Selection.parse(only)
    config_result, config = check_config(config_path)
    if config is None:
        clock = [await check_clock()] if selection.wants("clock") else []
        return DiagReport((config_result, *clock), config_ok=False)
    if selection.devices - set(config.devices):
        unknown = ", ".join(sorted(selection.devices - set(config.devices)))
        raise DiagUsageError(f"no device named {unknown} in {config.source}")

    now = time.time()
    needs_status = bool(selection.names & {"daemon", "device", "station", "outbox"})

    async def status_or_error() -> tuple[dict[str, Any] | None, DaemonUnreachable | None]:
        if not needs_status:
            return None, None
        try:
            return await fetch_status(config.socket_path, timeout=timeout), None
        except DaemonUnreachable as err:
            return None, err

    async def maybe(name: str, make: Callable[[], Awaitable[CheckResult]]) -> CheckResult | None:
        return await make() if selection.wants(name) else None

    async def sync(result: Callable[[], CheckResult]) -> CheckResult:
        return await asyncio.to_thread(result)

    (status, error), key, clock, disk, broker, systemd = await asyncio.gather(
        status_or_error(),
        maybe("key", lambda: sync(lambda: check_key(config))),
        maybe("clock", check_clock),
        maybe("disk", lambda: sync(lambda: check_disk(config.state_dir))),
        maybe("broker", lambda: check_broker(config, timeout=timeout)),
        maybe("systemd", lambda: check_systemd(timeout=timeout)),
    )
    devices: list[CheckResult] = []
    stations: list[CheckResult] = []
    if selection.wants("device"):
        names = None if selection.all_devices else sorted(selection.devices)
        devices = await check_devices(config, status, names=names, now=now, timeout=timeout)
    if selection.wants("station") and config.stations:
        every = devices if selection.all_devices else None
        every = every or await check_devices(config, status, now=now, timeout=timeout)
        stations = check_stations(config, every)
    outbox = await check_outbox(config, status, now=now) if selection.wants("outbox") else None
    daemon = check_daemon(config.socket_path, status, error, now=now) if selection.wants("daemon") else None

    ordered: list[CheckResult | None] = [
        config_result if selection.wants("config") else None,
        key,
        clock,
        disk,
        daemon,
        *devices,
        *stations,
        broker,
        outbox,
        systemd,
    ]
    return DiagReport(tuple(c for c in ordered if c is not None), status=status)


# ------------------------------------------------------------------------------------ output

_MARK: Final = {Verdict.PASS: "PASS", Verdict.WARN: "WARN", Verdict.FAIL: "FAIL", Verdict.SKIP: "skip"}
_COLOUR: Final = {Verdict.PASS: "32", Verdict.WARN: "33", Verdict.FAIL: "31", Verdict.SKIP: "2"}


def render_table(report: DiagReport, *, colour: bool = False) -> str:
    """A readable table: verdict, name, detail, and the fix under a failure or warning."""
    width = max((len(c.name) for c in report.checks), default=6)
    lines = []
    for check in report.checks:
        mark = _MARK[check.status]
        if colour:
            mark = f"\033[{_COLOUR[check.status]}m{mark}\033[0m"
        lines.append(f"{mark}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status in (Verdict.FAIL, Verdict.WARN):
            lines.append(f"      {'':<{width}}  fix: {check.fix}")
    counts = report.counts()
    summary = ", ".join(f"{counts[v.value]} {v.value}" for v in Verdict)
    lines.append(f"{len(report.checks)} checks: {summary}")
    return "\n".join(lines)


def render_json(report: DiagReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str)


def run_diag(config_path: str | None, *, as_json: bool, only: list[str] | None) -> int:
    """`edge-gateway diag`: print the checks; exit 0 no failure, 1 a failure, 2 could not run."""
    try:
        report = asyncio.run(diagnose(config_path, only=only))
    except DiagUsageError as err:
        print(f"edge-gateway diag: {err}", file=sys.stderr)
        return 2
    if as_json:
        print(render_json(report))
    else:
        print(render_table(report, colour=sys.stdout.isatty()))
    return report.exit_code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The diag options, for the CLI's subparser (`-c` is added there with the other commands)."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help=f"run only these checks: {', '.join(CHECK_NAMES)}, device:NAME",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gateway.ops.diag` (the same as `edge-gateway diag`)."""
    parser = argparse.ArgumentParser(prog="edge-gateway diag", description="check this gateway")
    parser.add_argument("-c", "--config", help="config file")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_diag(args.config, as_json=args.json, only=args.only)


if __name__ == "__main__":
    sys.exit(main())
