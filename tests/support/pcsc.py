"""pcscd with vpcd for tests and benchmarks: start once, reuse a running one, stop, restart.

pcscd is a system-wide singleton (one socket, /run/pcscd/pcscd.comm) and vpcd's card port is
fixed, so a session starts it once and tests that stop it must start it again. Only a pcscd
started here is ever stopped here.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

INSTALL_HINT = (
    "apt-get install -y pcscd vsmartcard-vpcd libpcsclite-dev swig && .venv/bin/pip install pyscard"
)
PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
PCSCD_PIDFILE = Path("/run/pcscd/pcscd.pid")
VPCD_READER = "Virtual PCD 00 00"
VPCD_PORT = 35963


class PcscStackMissing(RuntimeError):
    """pcscd, vpcd or pyscard is absent; the message says how to install them."""


class PcscdNotOwned(RuntimeError):
    """The running pcscd was not started here, so it is not ours to stop."""


def pcscd_binary() -> str | None:
    """Path of pcscd, if installed."""
    return shutil.which("pcscd") or ("/usr/sbin/pcscd" if os.access("/usr/sbin/pcscd", os.X_OK) else None)


_VPCD_LIBS = (
    "/usr/lib/pcsc/drivers/serial/libifdvpcd.so*",
    "/usr/lib/*/pcsc/drivers/serial/libifdvpcd.so*",
    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so*",
)


def _vpcd_installed() -> bool:
    libs = any(glob.glob(pattern) for pattern in _VPCD_LIBS)
    return libs and bool(glob.glob("/etc/reader.conf.d/*vpcd*"))


def _scard() -> Any | None:
    try:
        from smartcard import scard
    except ImportError:
        return None
    return scard


def missing_parts() -> list[str]:
    """Which pieces of the PC/SC test stack are absent."""
    missing = []
    if pcscd_binary() is None:
        missing.append("pcscd")
    if not _vpcd_installed():
        missing.append("vsmartcard-vpcd (libifdvpcd.so + /etc/reader.conf.d/vpcd)")
    if _scard() is None:
        missing.append("pyscard")
    return missing


def require_pcsc_stack() -> None:
    """Raise `PcscStackMissing` naming the install commands when anything is absent."""
    missing = missing_parts()
    if missing:
        raise PcscStackMissing(
            f"PC/SC test stack incomplete, missing: {', '.join(missing)}. Install with: {INSTALL_HINT}"
        )


def _vpcd_listening(port: int = VPCD_PORT) -> bool:
    # Reading /proc instead of connecting: a connection to vpcd *is* a card insertion.
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
                    return True
    return False


def readers(*, scard: Any | None = None) -> list[str] | None:
    """Reader names pcscd reports now, or None when pcscd does not answer."""
    s = scard or _scard()
    if s is None:
        return None
    hr, context = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
    if hr != s.SCARD_S_SUCCESS:
        return None
    try:
        hr, names = s.SCardListReaders(context, [])
        if hr == s.SCARD_E_NO_READERS_AVAILABLE:
            return []
        return list(names) if hr == s.SCARD_S_SUCCESS else None
    finally:
        s.SCardReleaseContext(context)


def card_present(reader: str = VPCD_READER) -> bool | None:
    """Whether pcscd sees a card in `reader` (None when it cannot tell)."""
    s = _scard()
    if s is None:
        return None
    hr, context = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
    if hr != s.SCARD_S_SUCCESS:
        return None
    try:
        hr, states = s.SCardGetStatusChange(context, 0, [(reader, s.SCARD_STATE_UNAWARE)])
        if hr != s.SCARD_S_SUCCESS:
            return None
        return bool(states[0][1] & s.SCARD_STATE_PRESENT)
    finally:
        s.SCardReleaseContext(context)


def wait_card_state(present: bool, *, reader: str = VPCD_READER, timeout: float = 5.0) -> bool:
    """Block until pcscd reports the card present (or absent); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if card_present(reader) is present:
            return True
        time.sleep(0.05)
    return False


class PcscDaemon:
    """pcscd in the foreground as our child (no -x), or a running one reused as is."""

    def __init__(self, *, log_path: Path | None = None) -> None:
        self.log_path = log_path or Path(tempfile.gettempdir()) / "edge-gateway-pcscd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def owned(self) -> bool:
        """Whether this object started the running pcscd (and so may stop it)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        with contextlib.suppress(OSError, ValueError):
            return int(PCSCD_PIDFILE.read_text().strip())
        return None

    @staticmethod
    def answering() -> bool:
        """Whether a pcscd answers on its socket now."""
        return readers() is not None

    def start(self, *, timeout: float = 15.0) -> None:
        """Start pcscd unless one answers already; return when vpcd's reader is listed."""
        require_pcsc_stack()
        if not self.owned and not self.answering():
            binary = pcscd_binary()
            assert binary is not None
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the daemon
            self._proc = subprocess.Popen(
                [binary, "--foreground"],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float = 15.0) -> None:
        """Block until pcscd lists vpcd's reader and vpcd listens for cards."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"pcscd exited with {self._proc.returncode}; see {self.log_path}")
            names = readers()
            if names is not None and VPCD_READER in names and _vpcd_listening():
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"pcscd did not list {VPCD_READER!r} within {timeout}s (log: {self.log_path}); "
            f"is vsmartcard-vpcd installed? {INSTALL_HINT}"
        )

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the pcscd we started (SIGTERM, then SIGKILL); refuse to touch anyone else's."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            if self.answering():
                raise PcscdNotOwned(f"pcscd (pid {self.pid}) was already running and is not ours to stop")
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        # Gone for clients too, before returning: a new context must fail from now on.
        deadline = time.monotonic() + timeout
        while self.answering() and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, *, timeout: float = 15.0) -> None:
        self.stop()
        self.start(timeout=timeout)
