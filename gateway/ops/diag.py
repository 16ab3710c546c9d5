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
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import msgspec

from gateway.config import GatewayConfig, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.ops import BUILD_DATE
from gateway.ops.broker_check import check_broker as check_broker
from gateway.ops.checks import DEFAULT_TIMEOUT, UNIT
from gateway.ops.checks import CheckResult as CheckResult
from gateway.ops.checks import Verdict as Verdict
from gateway.ops.checks import duration as _duration
from gateway.ops.checks import size as _size
from gateway.ops.device_checks import check_devices as check_devices
from gateway.ops.device_checks import check_stations as check_stations
from gateway.status import GatewayStatus, IncidentReport, OutboxClassStats, OutboxStats, decode_status

SYSTEMD_DIR: Final = Path("/run/systemd/system")
TIMESYNC_FLAG: Final = Path("/run/systemd/timesync/synchronized")

DISK_WARN: Final = 0.10
DISK_FAIL: Final = 0.02
OUTBOX_WARN_FILL: Final = 0.80
OUTBOX_FAIL_FILL: Final = 0.95
# tx/audit undelivered for longer than this means the uplink has been down for a while.
OUTBOX_WARN_AGE_S: Final = 3600.0

START_FIX: Final = f"start it: `systemctl start {UNIT}` (or `edge-gateway run -c CONFIG` by hand)"


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
    status: GatewayStatus | None = None

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


async def fetch_status(socket_path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> GatewayStatus:
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
            body = await resp.read()
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
    try:
        return decode_status(body)
    except msgspec.DecodeError as err:
        raise DaemonUnreachable(
            f"/v1/status is not a gateway's status ({err})", fix="is another program on this socket?"
        ) from err


def check_daemon(
    socket_path: Path, status: GatewayStatus | None, error: DaemonUnreachable | None, *, now: float
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
    up = f", up {_duration(now - status.started_at)}"
    lag_text = f", loop lag {status.loop.lag_s * 1000:.0f} ms"
    who = f"edge-gateway {status.version} (node {status.node})"
    detail = f"{socket_path}: {who}{up}{lag_text}"
    return CheckResult(
        "daemon", Verdict.PASS, detail, data={"socket": str(socket_path), "version": status.version}
    )


# ------------------------------------------------------------------------------------ outbox


def _outbox_settings(config: GatewayConfig) -> tuple[Path, int]:
    """Where the outbox file is and its byte quota (the [outbox] table, when config has one)."""
    outbox = getattr(config, "outbox", None)
    name = getattr(outbox, "file", "outbox.sqlite3")
    max_bytes = int(getattr(outbox, "max_bytes", 1 << 30))
    path = Path(name)
    return (path if path.is_absolute() else config.state_dir / path), max_bytes


def read_outbox(path: Path, *, now: float) -> OutboxStats:
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
    classes: dict[str, OutboxClassStats] = {}
    for stream, state, count, size, oldest in rows:
        entry = classes.setdefault(str(stream), OutboxClassStats())
        entry.bytes += int(size)
        if state == 0:
            entry.count += int(count)
            entry.oldest_age_s = max(0.0, now - float(oldest)) if oldest is not None else None
        else:
            entry.parked += int(count)
    return OutboxStats(
        classes=classes,
        count=sum(c.count for c in classes.values()),
        bytes=sum(c.bytes for c in classes.values()),
    )


def outbox_verdict(stats: OutboxStats, max_bytes: int) -> tuple[Verdict, str, str | None]:
    """Judge a backlog: quota fill, age of undelivered tx/audit, messages the broker rejected."""
    total = stats.bytes
    limit = stats.max_bytes or max_bytes
    fill = total / limit if limit else 0.0
    parts = []
    verdict = Verdict.PASS
    fix: str | None = None
    parked = 0
    for name, entry in sorted(stats.classes.items()):
        parked += entry.parked
        age = entry.oldest_age_s
        if entry.count:
            oldest = f", oldest {_duration(age)}" if age is not None else ""
            parts.append(f"{name} {entry.count} ({_size(entry.bytes)}{oldest})")
        if name in ("tx", "audit") and age is not None and age > OUTBOX_WARN_AGE_S:
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


async def check_outbox(config: GatewayConfig, status: GatewayStatus | None, *, now: float) -> CheckResult:
    """Backlog, bytes and oldest age per message class: from /v1/status, else the SQLite file."""
    path, max_bytes = _outbox_settings(config)
    reported = status.outbox if status is not None else None
    source = "daemon"
    stats: OutboxStats
    if reported is not None:
        stats = reported
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
    incidents = stats.incidents
    if incidents is None:
        # The daemon is down (or older): the journal file says the same.
        from gateway.uplink.outbox import incidents as journal

        incidents = [i.report() for i in journal.open_incidents(journal.journal_path(path))]
        stats = msgspec.structs.replace(stats, incidents=incidents)
    if incidents:
        verdict, detail, fix = incident_verdict(incidents, verdict, detail, fix)
    data = {"source": source, **msgspec.to_builtins(stats)}
    return CheckResult("outbox", verdict, f"{detail} (from the {source})", fix=fix, data=data)


def _incident_text(incident: IncidentReport) -> str:
    """One incident in a line: what happened, when, what may be lost, per stream."""
    at = incident.at
    when = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "?"
    parts = []
    for stream, (first, last) in sorted(incident.unaccounted.items()):
        parts.append(f"{stream} seq {first}" if first == last else f"{stream} seqs {first}-{last}")
    parts += [f"{stream} {count} unreadable row(s)" for stream, count in sorted(incident.unreadable.items())]
    what = "; ".join(parts) if parts else "nothing lost"
    kept = f", {incident.salvaged} message(s) salvaged" if incident.kind == "corrupt" else ""
    return f"{incident.kind} at {when}: {incident.possibly_lost} possibly lost ({what}){kept}"


def incident_verdict(
    incidents: list[IncidentReport], verdict: Verdict, detail: str, fix: str | None
) -> tuple[Verdict, str, str | None]:
    """Storage incidents not acknowledged yet: FAIL when messages may be lost, else WARN."""
    red = any(i.possibly_lost for i in incidents)
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


class DiagRun:
    """What the checks of one run share: the config, the daemon's /v1/status, the device checks."""

    def __init__(
        self, config: GatewayConfig, config_result: CheckResult, selection: Selection, *, timeout: float
    ) -> None:
        self.config = config
        self.config_result = config_result
        self.selection = selection
        self.timeout = timeout
        self.now = time.time()
        self._status: asyncio.Task[tuple[GatewayStatus | None, DaemonUnreachable | None]] | None = None
        self._devices: asyncio.Task[list[CheckResult]] | None = None

    async def _fetch(self) -> tuple[GatewayStatus | None, DaemonUnreachable | None]:
        try:
            return await fetch_status(self.config.socket_path, timeout=self.timeout), None
        except DaemonUnreachable as err:
            return None, err

    def ask_daemon(self) -> asyncio.Task[tuple[GatewayStatus | None, DaemonUnreachable | None]]:
        """Start asking /v1/status (once per run)."""
        if self._status is None:
            self._status = asyncio.create_task(self._fetch())
        return self._status

    async def status(self) -> tuple[GatewayStatus | None, DaemonUnreachable | None]:
        """/v1/status, or why the daemon did not answer."""
        return await self.ask_daemon()

    async def _every_device(self) -> list[CheckResult]:
        status, _ = await self.status()
        return await check_devices(self.config, status, now=self.now, timeout=self.timeout)

    async def all_devices(self) -> list[CheckResult]:
        """Every device's check, run once per run (the device and station checks share it)."""
        if self._devices is None:
            self._devices = asyncio.create_task(self._every_device())
        return await self._devices


async def _config(run: DiagRun) -> list[CheckResult]:
    return [run.config_result]


async def _key(run: DiagRun) -> list[CheckResult]:
    return [await asyncio.to_thread(check_key, run.config)]


async def _clock(run: DiagRun) -> list[CheckResult]:
    return [await check_clock()]


async def _disk(run: DiagRun) -> list[CheckResult]:
    return [await asyncio.to_thread(check_disk, run.config.state_dir)]


async def _daemon(run: DiagRun) -> list[CheckResult]:
    status, error = await run.status()
    return [check_daemon(run.config.socket_path, status, error, now=run.now)]


async def _devices(run: DiagRun) -> list[CheckResult]:
    if run.selection.all_devices:
        return await run.all_devices()
    status, _ = await run.status()
    names = sorted(run.selection.devices)
    return await check_devices(run.config, status, names=names, now=run.now, timeout=run.timeout)


async def _stations(run: DiagRun) -> list[CheckResult]:
    if not run.config.stations:
        return []
    return check_stations(run.config, await run.all_devices())


async def _broker(run: DiagRun) -> list[CheckResult]:
    return [await check_broker(run.config, timeout=run.timeout)]


async def _outbox(run: DiagRun) -> list[CheckResult]:
    status, _ = await run.status()
    return [await check_outbox(run.config, status, now=run.now)]


async def _systemd(run: DiagRun) -> list[CheckResult]:
    return [await check_systemd(timeout=run.timeout)]


@dataclass(frozen=True, slots=True)
class Check:
    """One named check: whether it needs the running daemon, and how it runs (its results, in order)."""

    name: str
    needs_daemon: bool
    run: Callable[[DiagRun], Awaitable[list[CheckResult]]]


# The checks in the order diag prints them; `--only` takes these names (and device:NAME).
CHECKS: Final = (
    Check("config", False, _config),
    Check("key", False, _key),
    Check("clock", False, _clock),
    Check("disk", False, _disk),
    Check("daemon", True, _daemon),
    Check("device", True, _devices),
    Check("station", True, _stations),
    Check("broker", False, _broker),
    Check("outbox", True, _outbox),
    Check("systemd", False, _systemd),
)
CHECK_NAMES: Final = tuple(check.name for check in CHECKS)


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
    """Run the selected checks concurrently; the output keeps the registry's order."""
    selection = Selection.parse(only)
    config_result, config = check_config(config_path)
    if config is None:
        clock = [await check_clock()] if selection.wants("clock") else []
        return DiagReport((config_result, *clock), config_ok=False)
    if selection.devices - set(config.devices):
        unknown = ", ".join(sorted(selection.devices - set(config.devices)))
        raise DiagUsageError(f"no device named {unknown} in {config.source}")
    run = DiagRun(config, config_result, selection, timeout=timeout)
    chosen = [check for check in CHECKS if selection.wants(check.name)]
    needs_status = any(check.needs_daemon for check in chosen)
    if needs_status:
        run.ask_daemon()  # now, alongside the checks that do not need the daemon
    results = await asyncio.gather(*(check.run(run) for check in chosen))
    status = (await run.status())[0] if needs_status else None
    return DiagReport(tuple(r for batch in results for r in batch), status=status)


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
