"""A framing buffer for preamble + length protocols: bounded, and resyncs on garbage."""

from __future__ import annotations

from collections.abc import Callable


class PreambleFramer:
    """Cuts a byte stream into candidate frames that start with `preamble`.

    Bytes before a preamble are dropped; a length above `max_frame` or a frame that
    fails `check` drops one byte and rescans, so a false preamble inside garbage
    cannot swallow the real frame that follows it.
    """

    def __init__(
        self,
        preamble: bytes,
        *,
        header_len: int,
        frame_len: Callable[[bytes], int],
        max_frame: int,
        check: Callable[[bytes], bool] | None = None,
    ) -> None:
        if header_len < len(preamble):
            raise ValueError("header must include the preamble")
        self._preamble = preamble
        self._header_len = header_len
        self._frame_len = frame_len
        self._max_frame = max_frame
        self._check = check
        self._buf = bytearray()
        self.dropped_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partial frame (after a timeout: the device stalled mid-frame)."""
        self.dropped_bytes += len(self._buf)
        self._buf.clear()

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add bytes; return the complete frames found and how many candidates failed `check`."""
        self._buf += data
        frames: list[bytes] = []
        rejected = 0
        buf = self._buf
        while True:
            start = buf.find(self._preamble)
            if start < 0:
                self._drop(len(buf) - self._partial_preamble_len())
                break
            if start:
                self._drop(start)
            if len(buf) < self._header_len:
                break
            size = self._frame_len(bytes(buf[: self._header_len]))
            if size < self._header_len or size > self._max_frame:
                self._drop(1)
                continue
            if len(buf) < size:
                break
            frame = bytes(buf[:size])
            if self._check is not None and not self._check(frame):
                rejected += 1
                self._drop(1)
                continue
            del buf[:size]
            frames.append(frame)
        return frames, rejected

    def _drop(self, count: int) -> None:
        if count > 0:
            del self._buf[:count]
            self.dropped_bytes += count

    def _partial_preamble_len(self) -> int:
        """Length of the longest buffer suffix that could still grow into a preamble."""
        for keep in range(min(len(self._preamble) - 1, len(self._buf)), 0, -1):
            if self._buf.endswith(self._preamble[:keep]):
                return keep
        return 0
