"""A real mosquitto broker on a free loopback port that a test can stop, kill and restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"


class PortBusy(RuntimeError):
    """The broker's port was taken when it started."""


class MosquittoMissing(RuntimeError):
    """The broker binary is absent; the message says how to install it."""


@dataclass(frozen=True)
class BrokerTls:
    """Files for a TLS listener that requires client certificates."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    """The mosquitto path, or a failure that tells how to install it."""
    path = MOSQUITTO if os.access(MOSQUITTO, os.X_OK) else shutil.which("mosquitto")
    if not path:
        raise MosquittoMissing(
            "mosquitto is not installed: run `apt-get install -y mosquitto` (needs /usr/sbin/mosquitto)"
        )
    return path


class Mosquitto:
    """One broker process bound to 127.0.0.1:port; restart keeps the port (and the store)."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        tls: BrokerTls | None = None,
        acl: str | None = None,
        persistence: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.binary = mosquitto_binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.tls = tls
        self.acl = acl
        self.persistence = persistence
        # More mosquitto.conf lines (e.g. "max_keepalive 10") for one test.
        self.extra = extra
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (for CPU and memory figures)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_inflight_messages 100",
            "max_queued_messages 200000",
        ]
        lines += self.extra
        if os.geteuid() == 0:
            # As root mosquitto drops to user `mosquitto`, which cannot read a 0700 test dir.
            lines.append("user root")
        if self.acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(self.acl)
            lines.append(f"acl_file {acl_path}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
                "tls_version tlsv1.2",
            ]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, *, timeout: float = 10.0) -> None:
        """Spawn the broker and return once it accepts TCP connections."""
        for _ in range(20):
            try:
                self._start(timeout)
                return
            except PortBusy:
                # Clients retrying against a loopback port nobody listens on can, now and then,
                # get that port as their source port (TCP self-connect) for a moment.
                time.sleep(0.25)
        self._start(timeout)

    def _start(self, timeout: float) -> None:
        if self.running:
            return
        conf = self._write_config()
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                tail = self.log_tail(3)
                if "Address already in use" in tail:
                    raise PortBusy(f"port {self.port} is in use: {tail}")
                raise RuntimeError(f"mosquitto exited at start: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"mosquitto did not listen on {self.port}: {self.log_tail()}")

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM (the broker saves its store) and wait for the exit."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


BrokerFactory = Callable[..., Mosquitto]
"""The `make_broker` fixture's type: start a broker with Mosquitto's keyword arguments."""
