"""Keep the state directory private: files left readable by others (an old run by hand) are closed.

The daemon's umask (0077) makes everything it creates private. A state directory made before, by a
run under a shell's umask 0022, can still hold 0644 files (the outbox and its WAL keep personal
data until delivered) and 0755 directories; SQLite gives a new -wal file the database's mode, so
one loose database stays loose. At start they are made owner-only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def make_private(
    root: Path, *, keep_root_searchable: bool = False, leave: tuple[Path, ...] = ()
) -> list[str]:
    """Remove group/other bits below `root` (sockets aside); the paths changed, relative to root.

    Paths in `leave` (and below them) are not touched: the signing key is checked, not fixed, so a
    key that was readable by others is reported (it may have leaked) instead of quietly closed.
    """
    changed: list[str] = []
    me = os.geteuid()
    for item in [root, *root.rglob("*")]:
        if any(item == other or other in item.parents for other in leave):
            continue
        try:
            info = item.lstat()
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISSOCK(info.st_mode) or stat.S_ISLNK(info.st_mode) or info.st_uid != me or not mode & 0o077:
            continue
        if item == root and keep_root_searchable:
            # The API socket lives here and its mode lets others in: they must reach it.
            continue
        try:
            item.chmod(mode & 0o700)
        except OSError as err:
            log.warning("state_not_private", path=str(item), mode=oct(mode), error=str(err))
            continue
        changed.append(str(item.relative_to(root)) or ".")
    if changed:
        log.warning("state_made_private", path=str(root), changed=len(changed), examples=changed[:5])
    return changed
