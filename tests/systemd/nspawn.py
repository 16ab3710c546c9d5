"""A Debian 12 root booted with systemd as PID 1 in systemd-nspawn, for the slow install test.

How these machines boot one (no systemd on the host, mixed cgroup v1/v2): ../shared
systemd-nspawn.md. The root comes from debootstrap off the Debian mirror apt uses here and is
cached under CACHE_DIR, keyed by suite, mirror and package list; each boot runs on a throwaway
copy of it (`--ephemeral`), so the cache stays clean.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

CACHE_DIR = Path(os.environ.get("EDGE_GATEWAY_TEST_CACHE", "/var/cache/edge-gateway-test"))
SUITE = "bookworm"
# What the box needs besides minbase: systemd as init, Python 3.11 with venv, curl for the kiosk.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates", "curl", "procps")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

T = TypeVar("T")


class BoxError(RuntimeError):
    """The container could not be prepared, booted or reached."""


def apt_mirror() -> str:
    """The Debian archive URI apt uses on this machine (sources.list or deb822 .sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        uris: list[str] = re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M)
        uris += [u for line in re.findall(r"^URIs:\s*(.+)$", text, re.M) for u in str(line).split()]
        for uri in uris:
            if uri.rstrip("/").endswith("/debian"):
                return uri
    raise BoxError("no Debian mirror (a URI ending in /debian) in /etc/apt/sources.list{,.d}")


def cached_root(packages: tuple[str, ...] = PACKAGES) -> tuple[Path, bool]:
    """The bootstrapped root for `packages`, made once per key; (path, made_now)."""
    mirror = apt_mirror()
    key = hashlib.sha256(
        json.dumps(
            {"suite": SUITE, "variant": "minbase", "mirror": mirror, "packages": sorted(packages)}
        ).encode()
    ).hexdigest()[:16]
    root = CACHE_DIR / f"{SUITE}-{key}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one debootstrap at a time; the second run reuses it
        if (root / "usr/lib/systemd/systemd").exists():
            return root, False
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                SUITE,
                str(partial),
                mirror,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = result.stdout[-3000:] + result.stderr
            raise BoxError(f"debootstrap failed ({result.returncode}):\n{tail}")
        partial.rename(root)
        return root, True


def _cgroup2_base() -> Path:
    """Where a cgroup v2 hierarchy is mounted: the hybrid layout's `unified`, or the root."""
    for base in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (base / "cgroup.procs").exists() and (base / "cgroup.controllers").exists():
            return base
    raise BoxError("no cgroup v2 hierarchy under /sys/fs/cgroup")


def until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy (a non-empty list, True, ...); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Box:
    """One booted container: run commands in it as root, read systemd's view of units."""

    def __init__(self, root: Path, name: str, binds: dict[Path, str], log: Path) -> None:
        self.root = root
        self.name = name
        self.binds = binds
        self.log = log
        self.cgroup = _cgroup2_base() / name
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    def boot(self, timeout: float = 120) -> None:
        """Start nspawn in its own v2 cgroup and wait until systemd reports the system up."""
        self.cgroup.mkdir()
        args = [
            "systemd-nspawn",
            "-D",
            str(self.root),
            "-b",
            "-M",
            self.name,
            "--register=no",
            "--keep-unit",
            "--console=passive",
            # Without it nspawn's seccomp refuses bpf(): DeviceAllow= would silently not apply.
            "--system-call-filter=bpf",
            "--ephemeral",
            *(f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()),
        ]
        procs = shlex.quote(str(self.cgroup / "cgroup.procs"))
        script = f"echo $BASHPID > {procs} && exec {shlex.join(args)}"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", script],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
            )
        self.pid1 = until(self._init_pid, 60, "the container's systemd to start")
        seen: list[str] = []

        def up() -> bool:
            # Right after the fork PID 1 may not answer on its bus yet: ask until it does.
            result = self.sh("systemctl is-system-running", check=False, timeout=30)
            seen.append((result.stdout + result.stderr).strip())
            return seen[-1] in ("running", "degraded")

        try:
            until(up, timeout, "the container's boot to finish")
        except AssertionError as err:
            log = self.log.read_text(errors="replace")[-3000:]
            raise BoxError(f"container did not come up: {seen[-3:]}\n{log}") from err

    def _init_pid(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = self.log.read_text(errors="replace")
            raise BoxError(f"systemd-nspawn exited {self.proc.returncode}:\n{log}")
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
        return None

    def sh(
        self, command: str, *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside, as root with a clean environment, via nsenter."""
        result = subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.pid1),
                "-a",
                "--",
                "env",
                "-i",
                f"PATH={PATH}",
                "HOME=/root",
                "LANG=C.UTF-8",
                "bash",
                "-c",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`{command}` exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show` properties of a unit."""
        out = self.sh(f"systemctl show {shlex.quote(unit)} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write(self, path: str, text: str, mode: str = "0640", group: str = "edge-gateway") -> None:
        """Write a file inside (root:group, mode), the way a technician edits the config."""
        self.sh(
            f"cat > {shlex.quote(path)} <<'EOF_BOX'\n{text}\nEOF_BOX\n"
            f"chown root:{group} {shlex.quote(path)} && chmod {mode} {shlex.quote(path)}"
        )

    def journal(self, *filters: str, cursor: str | None = None) -> list[dict[str, str]]:
        """Journal entries of this boot (after `cursor` if given) whose fields match every
        `FIELD=value` filter. The matching is done here: journalctl 252 returns nothing for
        --after-cursor combined with field matches."""
        after = f"--after-cursor={shlex.quote(cursor)}" if cursor else "-b"
        out = self.sh(f"journalctl --no-pager -o json {after}", timeout=120).stdout
        wanted = [f.split("=", 1) for f in filters]
        entries = []
        for line in out.splitlines():
            entry = json.loads(line)
            if isinstance(entry.get("MESSAGE"), list):  # non-UTF-8 messages come as byte arrays
                entry["MESSAGE"] = bytes(entry["MESSAGE"]).decode(errors="replace")
            if all(entry.get(field) == value for field, value in wanted):
                entries.append(entry)
        return entries

    def cursor(self) -> str:
        """The journal's current end, to read only what comes after."""
        out = self.sh("journalctl --no-pager -n 1 -o json").stdout.strip().splitlines()
        return str(json.loads(out[-1])["__CURSOR"])

    def halt(self) -> None:
        """Stop nspawn (the container halts cleanly), then remove the cgroups made for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self.cgroup.exists():
            for directory in sorted(self.cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if directory.is_dir():
                    with contextlib.suppress(OSError):
                        directory.rmdir()
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()


@contextlib.contextmanager
def booted(root: Path, name: str, binds: dict[Path, str], log: Path) -> Iterator[Box]:
    """A booted Box, halted and cleaned up on the way out."""
    box = Box(root, name, binds, log)
    try:
        box.boot()
        yield box
    finally:
        box.halt()
