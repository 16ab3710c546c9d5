"""The outbox's seq high-water mark: `<db>.seq`, made durable before any commit that uses a new seq.

SQLite can come back at an earlier state than the one it acknowledged: a disk that lies about
fsync loses the tail of the WAL at a power cut, and the database opens cleanly without the last
commits. Their seqs may already be in the cloud, which deduplicates on (node, stream, seq), so the
outbox must never hand them out again. Before each commit that uses a seq above the mark, the
writer records the new highest seq of every stream (and the digest of its last envelope, so the
hash chain can continue) here and fdatasyncs it. On open, a database whose streams are behind
the mark lost its tail: the outbox continues above the mark and reports the unaccounted seqs.

The file is two fixed 1024-byte slots written alternately in place (no rename, one fdatasync per
update, no allocation after the first write). Each slot is `CRC32-hex SP JSON`, space padded, so
a torn write leaves the other slot intact. The file of older releases (one JSON object of
reserved seqs per stream) is still read; its values are an upper bound of what was used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SLOT: Final = 1024
_SLOTS: Final = 2


class SeqMarkFull(OSError):
    """No room on the file system for the mark (ENOSPC / EDQUOT): nothing may be committed."""


@dataclass(frozen=True)
class Mark:
    """The highest seq handed out per stream, with the digest of that envelope ("" if unknown)."""

    seqs: dict[str, int]
    digests: dict[str, str]
    counter: int = 0
    legacy: bool = False


def _encode(counter: int, seqs: Mapping[str, int], digests: Mapping[str, str]) -> bytes:
    doc = {"n": counter, "s": {s: [int(q), digests.get(s, "")] for s, q in sorted(seqs.items())}}
    body = json.dumps(doc, separators=(",", ":")).encode()
    line = b"%08x %s" % (zlib.crc32(body), body)
    if len(line) > SLOT - 1:
        raise ValueError(f"seq mark record too large ({len(line)} bytes)")
    return line.ljust(SLOT - 1, b" ") + b"\n"


def _decode(slot: bytes) -> Mark | None:
    text = slot.rstrip(b" \n\0")
    if len(text) < 10 or text[8:9] != b" ":
        return None
    body = text[9:]
    try:
        if int(text[:8], 16) != zlib.crc32(body):
            return None
        doc = json.loads(body)
        seqs = {str(s): int(v[0]) for s, v in doc["s"].items()}
        digests = {str(s): str(v[1]) for s, v in doc["s"].items()}
        return Mark(seqs, digests, int(doc["n"]))
    except (ValueError, KeyError, TypeError, IndexError):
        return None


class SeqMark:
    """Reads and durably updates the mark file; one instance per open outbox (writer thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._counter = 0

    def read(self) -> Mark | None:
        """The newest valid record, or None when there is no file (or nothing valid in it)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if raw.lstrip().startswith(b"{"):
            try:
                doc = json.loads(raw)
                seqs = {str(s): int(v) for s, v in doc.items()}
            except (ValueError, TypeError, AttributeError):
                return None
            return Mark(seqs, {}, 0, legacy=True)
        marks = [m for m in (_decode(raw[i * SLOT : (i + 1) * SLOT]) for i in range(_SLOTS)) if m]
        if not marks:
            return None
        best = max(marks, key=lambda m: m.counter)
        self._counter = max(self._counter, best.counter)
        return best

    def write(self, seqs: Mapping[str, int], digests: Mapping[str, str]) -> None:
        """Record the mark and fdatasync it; raises SeqMarkFull when the disk has no room."""
        self._counter += 1
        record = _encode(self._counter, seqs, digests)
        try:
            fd = self._open()
            os.pwrite(fd, record, (self._counter % _SLOTS) * SLOT)
            os.fdatasync(fd)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SeqMarkFull(err.errno, f"no room for {self.path}: {err.strerror}") from err
            raise

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        try:
            size = self.path.stat().st_size
            fresh = size != SLOT * _SLOTS or self.path.read_bytes().lstrip().startswith(b"{")
        except FileNotFoundError:
            fresh = True
        if fresh:
            self._create()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        return self._fd

    def _create(self) -> None:
        """Lay out both slots in a temp file, fsync, rename: a crash leaves the old file or the new."""
        old = self.read()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                seqs = old.seqs if old else {}
                digests = old.digests if old else {}
                for slot in range(_SLOTS):
                    os.pwrite(fd, _encode(0, seqs, digests), slot * SLOT)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SeqMarkFull(err.errno, f"no room for {tmp}: {err.strerror}") from err
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
