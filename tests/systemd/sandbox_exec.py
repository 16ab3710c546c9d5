"""Run a program under the seccomp policy edge-gateway.service asks systemd for, without systemd.

Usage: python -m tests.systemd.sandbox_exec UNIT_FILE [--errno] [--as-uid N] -- PROGRAM [ARGS...]

There is no systemd PID 1 here, so this applies the unit's SystemCallFilter=,
MemoryDenyWriteExecute= and RestrictAddressFamilies= with the kernel mechanism systemd uses
(seccomp, through libseccomp, the library systemd links), with the syscall groups taken from
this machine's `systemd-analyze syscall-filter`, then execs PROGRAM. Syscalls outside the
allow-list kill the process (SIGSYS) unless --errno, which answers EPERM as the unit's
SystemCallErrorNumber= does: a test wants a blocked call to be loud. --as-uid runs the program
as uid/gid N, as User= runs the daemon unprivileged (code run as root takes other paths: SQLite
fchown()s its files), through a user namespace mapping N to the caller, so the program still
reaches the caller's files (the test interpreter may live under a 0700 home).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import socket
import subprocess
import sys
from pathlib import Path

from .unitfile import parse_unit

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000
CLONE_NEWUSER = 0x10000000
# Highest address family number the kernel knows (AF_MAX - 1 on Linux 6.x is 45).
AF_LAST = 45


def scmp_act_errno(code: int) -> int:
    """libseccomp's SCMP_ACT_ERRNO(x) macro."""
    return 0x00050000 | (code & 0x0000FFFF)


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class Seccomp:
    """The few libseccomp calls needed to build and load one filter."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        lib = ctypes.CDLL(name, use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(ArgCmp),
        ]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        self._lib = lib

    def resolve(self, name: str) -> int:
        """Native syscall number, negative when this architecture has no such call."""
        return int(self._lib.seccomp_syscall_resolve_name(name.encode()))

    def load(self, default: int, rules: list[tuple[int, str, list[ArgCmp]]]) -> None:
        """Build a filter with a default action and (action, syscall, conditions) rules; load it."""
        ctx = self._lib.seccomp_init(default)
        if not ctx:
            raise OSError("seccomp_init failed")
        try:
            for action, name, conds in rules:
                nr = self.resolve(name)
                if nr < 0:
                    continue
                array = (ArgCmp * max(len(conds), 1))(*conds)
                rc = self._lib.seccomp_rule_add_array(ctx, action, nr, len(conds), array)
                if rc < 0:
                    raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")
            rc = self._lib.seccomp_load(ctx)
            if rc < 0:
                raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
        finally:
            self._lib.seccomp_release(ctx)


def syscall_groups() -> dict[str, list[str]]:
    """Each @group of this systemd's `systemd-analyze syscall-filter`, members as listed."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], check=True, capture_output=True, text=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif not line.startswith(" "):
            current = None
        elif current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(item: str, groups: dict[str, list[str]]) -> set[str]:
    """A syscall name or @group to the set of syscall names it stands for."""
    if not item.startswith("@"):
        return {item}
    names: set[str] = set()
    for member in groups[item]:
        names |= expand(member, groups)
    return names


def allowed_syscalls(assignments: list[str], groups: dict[str, list[str]]) -> set[str]:
    """SystemCallFilter= assignments, in order, to the allow-list systemd builds from them."""
    if not assignments or assignments[0].startswith("~"):
        raise ValueError("expected an allow-list SystemCallFilter= first")
    allowed = expand("@default", groups)
    for assignment in assignments:
        deny = assignment.startswith("~")
        for item in assignment.removeprefix("~").split():
            if deny:
                allowed -= expand(item, groups)
            else:
                allowed |= expand(item, groups)
    return allowed


def guard_rules(service: dict[str, list[str]]) -> list[tuple[int, str, list[ArgCmp]]]:
    """MemoryDenyWriteExecute= and RestrictAddressFamilies= as seccomp argument rules."""
    eperm = scmp_act_errno(errno.EPERM)
    rules: list[tuple[int, str, list[ArgCmp]]] = []
    if service.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        wx = mmap.PROT_WRITE | mmap.PROT_EXEC
        # As systemd: no mapping both writable and executable, no mprotect() to executable.
        for name in ("mmap", "mmap2"):
            rules.append((eperm, name, [ArgCmp(2, SCMP_CMP_MASKED_EQ, wx, wx)]))
        for name in ("mprotect", "pkey_mprotect"):
            rules.append((eperm, name, [ArgCmp(2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC)]))
        rules.append((eperm, "shmat", [ArgCmp(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC)]))
    families = service.get("RestrictAddressFamilies", [])
    if families:
        allowed = {int(getattr(socket, name)) for name in " ".join(families).split()}
        refuse = scmp_act_errno(errno.EAFNOSUPPORT)
        for family in range(AF_LAST + 1):
            if family not in allowed:
                rules.append((refuse, "socket", [ArgCmp(0, SCMP_CMP_EQ, family, 0)]))
    return rules


def become(uid: int) -> None:
    """Enter a new user namespace where the caller's uid and gid appear as `uid`."""
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWUSER): {os.strerror(code)}")
    Path("/proc/self/uid_map").write_text(f"{uid} {outer_uid} 1\n")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/gid_map").write_text(f"{uid} {outer_gid} 1\n")


def main(argv: list[str]) -> None:
    """Parse arguments, load the unit's filters and exec the program under them."""
    if "--" not in argv or len(argv) < 3:
        raise SystemExit(__doc__)
    split = argv.index("--")
    unit_file, options, program = argv[0], argv[1:split], argv[split + 1 :]
    service = parse_unit(Path(unit_file))["Service"]
    allowed = allowed_syscalls(service["SystemCallFilter"], syscall_groups())
    blocked = scmp_act_errno(errno.EPERM) if "--errno" in options else SCMP_ACT_KILL_PROCESS
    if "--as-uid" in options:
        become(int(options[options.index("--as-uid") + 1]))
    seccomp = Seccomp()
    # Argument guards first: the allow-list loaded last may not permit seccomp() itself.
    seccomp.load(SCMP_ACT_ALLOW, guard_rules(service))
    seccomp.load(blocked, [(SCMP_ACT_ALLOW, name, []) for name in sorted(allowed)])
    os.execvp(program[0], program)  # noqa: S606 (replacing this process is the point)


if __name__ == "__main__":
    main(sys.argv[1:])
