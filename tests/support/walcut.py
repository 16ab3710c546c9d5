"""What a disk that lies about fsync does at a power cut: the last commits vanish from the WAL.

SQLite WAL layout (big-endian 32-bit fields), as described by SQLite's own src/wal.c header
comment (e.g. laurent22/joplin ReactNativeClient/lib/sql-extensions/sqlite/src/wal.c) and by
libsql's bottomless/src/wal.rs (tursodatabase/libsql) and the fsqlite-wal crate's WalFrameHeader:
a 32-byte header (magic, version, page size at offset 8, checkpoint seq, salt-1 at 16, salt-2 at
20, checksums), then frames of a 24-byte header plus one page. Frame header: page number, the
database size in pages for a commit frame (0 for other frames) at offset 4, salt-1 and salt-2 at
8 and 12 (a frame is current only if they match the header's), cumulative checksums at 16 and 20.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

HEADER = 32
FRAME_HEADER = 24


def commit_ends(wal: Path) -> list[int]:
    """Byte offsets just past each commit frame of the current WAL generation, in order."""
    data = wal.read_bytes()
    if len(data) < HEADER:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    frame = FRAME_HEADER + page_size
    ends = []
    offset = HEADER
    while offset + frame <= len(data):
        head = data[offset : offset + FRAME_HEADER]
        if head[8:16] != salts:
            break  # a leftover of an earlier generation: not part of the log
        offset += frame
        if struct.unpack(">I", head[4:8])[0]:
            ends.append(offset)
    return ends


def cut_last_commits(db: Path, commits: int) -> int:
    """Drop the whole frames of the last `commits` commits from `<db>-wal` and delete `<db>-shm`.

    Returns how many commits the WAL held before the cut. The database must not be open.
    """
    wal = db.with_name(db.name + "-wal")
    ends = commit_ends(wal)
    if len(ends) <= commits:
        raise AssertionError(f"{wal} holds {len(ends)} commit(s); cannot drop {commits} and keep one")
    keep = ends[-commits - 1]
    with wal.open("r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    shm = db.with_name(db.name + "-shm")
    if shm.exists():
        shm.unlink()
    return len(ends)
