"""Shared pieces of the daemon benchmarks: a sim-device config, the daemon process, NOTIFY_SOCKET, figures."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# The embedded default's simulated peripherals, with realistic service times.
SIM_DEVICES = """
[devices.idcard]
driver = "samv"
port = "sim://idcard"
baudrate = 115200

[devices.printer]
driver = "escpos"
port = "sim://printer"
baudrate = 115200
sim_print_time_s = {print_time}
"""


def short_tmpdir(prefix: str = "egw-bench-") -> Path:
    """A temp dir under /tmp: Unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextlib.contextmanager
def state_dir() -> Iterator[Path]:
    path = short_tmpdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(
    state: Path,
    *,
    api: str = "",
    devices: str | None = None,
    print_time: float = 0.5,
    log_level: str = "info",
) -> Path:
    """A production-like config (info logging, no broker) with the simulated devices."""
    path = state / "gateway.toml"
    device_text = devices if devices is not None else SIM_DEVICES.format(print_time=print_time)
    path.write_text(
        f"""
[node]
id = "edge-bench"
state_dir = "{state}"
auto_init_key = true

[api]
socket = "{state / "api.sock"}"
{api}

[log]
level = "{log_level}"
format = "json"
{device_text}
"""
    )
    return path


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's: a bound datagram socket the daemon reports READY=1 to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def wait_ready(self, *, timeout: float = 30.0) -> float:
        """Block until a datagram holding READY=1 arrives; its arrival time (time.monotonic)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            if "READY=1" in data.decode(errors="replace").split("\n"):
                return time.monotonic()
        raise TimeoutError(f"no READY=1 within {timeout} s")

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# `python -m gateway` with some modules made unimportable first (as if not installed).
_RUN_WITHOUT = (
    "import runpy, sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = ['gateway', *sys.argv[2:]]\n"
    "runpy.run_module('gateway', run_name='__main__', alter_sys=True)\n"
)


def spawn_daemon(
    config: Path, *, env: dict[str, str] | None = None, without: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """`python -m gateway run -c CONFIG` (optionally with `without` modules hidden), output to a file."""
    out = (config.parent / "daemon.out").open("ab")
    argv = ["-c", _RUN_WITHOUT, ",".join(without)] if without else ["-m", "gateway"]
    try:
        return subprocess.Popen(
            [PYTHON, *argv, "run", "-c", str(config)],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def wait_for_socket(path: Path, *, timeout: float = 30.0) -> None:
    """Block until something accepts connections on the Unix socket `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            time.sleep(0.02)
        else:
            return
        finally:
            probe.close()
    raise TimeoutError(f"nothing listening on {path} after {timeout} s")


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it does not exit within `timeout`; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout)


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 1_048_576


@dataclass
class CpuMeter:
    """CPU share of one process over an interval (100 = one core busy)."""

    process: psutil.Process
    wall: float = 0.0
    cpu: float = 0.0

    @classmethod
    def start(cls, pid: int) -> CpuMeter:
        meter = cls(psutil.Process(pid))
        meter.reset()
        return meter

    def reset(self) -> None:
        times = self.process.cpu_times()
        self.wall, self.cpu = time.monotonic(), times.user + times.system

    def percent(self) -> float:
        times = self.process.cpu_times()
        elapsed = time.monotonic() - self.wall
        return 100.0 * (times.user + times.system - self.cpu) / elapsed if elapsed > 0 else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"
