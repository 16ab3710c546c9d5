"""pcscd with vpcd for tests and benchmarks: start once, reuse a running one, stop, restart.

pcscd is a system-wide singleton (one socket, /run/pcscd/pcscd.comm), so a session starts it once
and tests that stop it must start it again. Only a pcscd started here is ever stopped here.

vpcd's card port is not: a pcscd started here reads its own reader.conf.d (`pcscd -c`) with vpcd
on a free port pair, because the packaged 35963 may already be held by another pcscd on the same
network namespace (a CI sandbox beside the machine's own pcscd is one such place); vpcd then fails
to bind and pcscd comes up without the reader. A reused pcscd is assumed to run the packaged
config, whose port is read from /etc/reader.conf.d.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import re
import shutil
import signal
import socket
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


def _vpcd_library() -> str | None:
    for pattern in _VPCD_LIBS:
        for path in sorted(glob.glob(pattern)):
            return path
    return None


def _vpcd_installed() -> bool:
    return _vpcd_library() is not None and bool(glob.glob("/etc/reader.conf.d/*vpcd*"))


def packaged_vpcd_port() -> int:
    """The card port in the packaged /etc/reader.conf.d/vpcd (CHANNELID), 35963 if unreadable."""
    for path in glob.glob("/etc/reader.conf.d/*vpcd*"):
        with contextlib.suppress(OSError):
            found = re.search(r"^\s*CHANNELID\s+(0x[0-9A-Fa-f]+|\d+)", Path(path).read_text(), re.MULTILINE)
            if found:
                return int(found.group(1), 0)
    return VPCD_PORT


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            # The wildcard, as vpcd binds it: a port held on any address would stop vpcd.
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port_pair(low: int = 20_000, high: int = 30_000) -> int:
    """A port p with p and p+1 free (vpcd opens one per slot), below the ephemeral range."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high, 2)
        if _port_free(port) and _port_free(port + 1):
            return port
    raise RuntimeError(f"no free port pair for vpcd in {low}-{high}")


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
        self._conf_dir: tempfile.TemporaryDirectory[str] | None = None
        # Where virtual cards connect: our own vpcd's port once started, else the packaged one.
        self.vpcd_port = packaged_vpcd_port()
        self._own_port: int | None = None

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
            binary, library = pcscd_binary(), _vpcd_library()
            assert binary is not None and library is not None
            # A restart keeps the port, so cards made for this pcscd find it again.
            if self._own_port is None:
                self._own_port = free_port_pair()
            self.vpcd_port = self._own_port
            self._conf_dir = tempfile.TemporaryDirectory(prefix="edge-gateway-pcscd-")
            Path(self._conf_dir.name, "vpcd").write_text(
                'FRIENDLYNAME "Virtual PCD"\n'
                f"DEVICENAME   /dev/null:{self.vpcd_port:#06x}\n"
                f"LIBPATH      {library}\n"
                f"CHANNELID    {self.vpcd_port:#06x}\n"
            )
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the daemon
            self._proc = subprocess.Popen(
                [binary, "--foreground", "--config", self._conf_dir.name],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_ready(timeout=timeout)
        except BaseException:
            # Leave nothing running or open behind a failed start: the error is the report.
            if self._proc is not None:
                self._terminate()
            raise

    def wait_ready(self, *, timeout: float = 15.0) -> None:
        """Block until pcscd lists vpcd's reader and vpcd listens for cards."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"pcscd exited with {self._proc.returncode}; its log ends:\n{self.log_tail()}"
                )
            names = readers()
            if names is not None and VPCD_READER in names and _vpcd_listening(self.vpcd_port):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"pcscd did not list {VPCD_READER!r} with vpcd listening on {self.vpcd_port} within "
            f"{timeout}s ({'ours' if self.owned else 'a running one, reused'}); its log ends:\n"
            f"{self.log_tail()}\nis vsmartcard-vpcd installed? {INSTALL_HINT}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The end of our pcscd's log (what vpcd said when it could not open its port, say)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(no log: {err})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the pcscd we started (SIGTERM, then SIGKILL); refuse to touch anyone else's."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._terminate()  # ours (if any) exited by itself: release its log and config
            if self.answering():
                raise PcscdNotOwned(f"pcscd (pid {self.pid}) was already running and is not ours to stop")
            return
        self._terminate(timeout=timeout)
        # Gone for clients too, before returning: a new context must fail from now on.
        deadline = time.monotonic() + timeout
        while self.answering() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _terminate(self, *, timeout: float = 10.0) -> None:
        """Stop our pcscd if it still runs (SIGTERM, then SIGKILL) and release its log and config."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._conf_dir is not None:
            self._conf_dir.cleanup()
            self._conf_dir = None

    def restart(self, *, timeout: float = 15.0) -> None:
        self.stop()
        self.start(timeout=timeout)
