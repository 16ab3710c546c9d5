"""One JPEG out of an MJPEG stream (`multipart/x-mixed-replace`), read within fixed bounds. Pure.

A stream is `--BOUNDARY CRLF headers CRLF CRLF body CRLF --BOUNDARY ...` without end (RFC 2046
section 5.1.1 framing; Content-Type `multipart/x-mixed-replace; boundary=...`). Cameras put a
`Content-Type: image/jpeg` and usually a `Content-Length` in each part (mjpg-streamer's httpd,
esp32-camera's stream handler); some write the boundary parameter with its leading "--"
already. The parser takes the first image/jpeg part and never buffers more than the frame
limit plus one header block.
"""

from __future__ import annotations

from email.message import Message

from drivers.camera.errors import CaptureFailed, FrameTooLarge

MAX_PREAMBLE = 64 * 1024
MAX_PART_HEADERS = 8 * 1024
MAX_SKIPPED_PARTS = 4


def stream_boundary(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type; CaptureFailed when there is none."""
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary.strip() or len(boundary) > 200:
        raise CaptureFailed("MJPEG stream without a usable boundary parameter", code="no_boundary")
    return boundary.strip()


class FirstFrame:
    """Fed the stream's bytes as they come; `feed` returns the first JPEG part's body once whole."""

    def __init__(self, boundary: str, *, max_bytes: int) -> None:
        bare = boundary[2:] if boundary.startswith("--") else boundary
        # Accept `--boundary` (RFC 2046) and, for cameras that doubled it, the parameter as sent.
        self._delimiters = tuple(dict.fromkeys((b"--" + bare.encode(), b"--" + boundary.encode())))
        self._max = max_bytes
        self._buf = bytearray()
        self._state = "preamble"
        self._length: int | None = None
        self._skip = False
        self._parts = 0
        self.received = 0

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a part (bounded by the limits above)."""
        return len(self._buf)

    def feed(self, data: bytes) -> bytes | None:
        self.received += len(data)
        self._buf += data
        while True:
            if self._state == "preamble":
                if not self._preamble():
                    return None
            elif self._state == "headers":
                if not self._headers():
                    return None
            else:
                body = self._body()
                if body is None:
                    return None
                if not self._skip:
                    return body

    def _find_delimiter(self, start: int = 0) -> tuple[int, int] | None:
        hits = [(i, len(d)) for d in self._delimiters if (i := self._buf.find(d, start)) >= 0]
        return min(hits) if hits else None

    def _preamble(self) -> bool:
        hit = self._find_delimiter()
        if hit is None:
            if len(self._buf) > MAX_PREAMBLE:
                raise CaptureFailed(
                    f"MJPEG stream: no boundary line in the first {MAX_PREAMBLE} bytes",
                    code="no_boundary",
                )
            return False
        end = self._buf.find(b"\n", hit[0] + hit[1])
        if end < 0:
            return False
        del self._buf[: end + 1]
        self._state = "headers"
        return True

    def _headers(self) -> bool:
        # Some cameras send no part headers at all: the blank line comes at once.
        if self._buf.startswith((b"\r\n", b"\n")):
            del self._buf[: 2 if self._buf.startswith(b"\r\n") else 1]
            return self._start_body({})
        crlf, lf = self._buf.find(b"\r\n\r\n"), self._buf.find(b"\n\n")
        ends = [(i, n) for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
        if not ends:
            if len(self._buf) > MAX_PART_HEADERS:
                raise CaptureFailed("MJPEG stream: part headers too long", code="bad_part")
            return False
        at, size = min(ends)
        block = bytes(self._buf[:at]).decode("latin-1")
        del self._buf[: at + size]
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        return self._start_body(fields)

    def _start_body(self, fields: dict[str, str]) -> bool:
        kind = fields.get("content-type", "image/jpeg").split(";")[0].strip().lower()
        self._parts += 1
        self._skip = kind not in ("image/jpeg", "image/jpg")
        if self._skip and self._parts > MAX_SKIPPED_PARTS:
            raise CaptureFailed(
                f"MJPEG stream: no image/jpeg part in the first {MAX_SKIPPED_PARTS} (got {kind})",
                code="not_jpeg",
            )
        length = fields.get("content-length")
        self._length = None
        if length is not None:
            try:
                self._length = int(length)
            except ValueError:
                raise CaptureFailed("MJPEG stream: bad part Content-Length", code="bad_part") from None
            if self._length < 0:
                raise CaptureFailed("MJPEG stream: bad part Content-Length", code="bad_part")
            if self._length > self._max:
                raise FrameTooLarge(
                    f"MJPEG part of {self._length} bytes exceeds the {self._max}-byte limit",
                    limit=self._max,
                )
        self._state = "body"
        return True

    def _body(self) -> bytes | None:
        if self._length is not None:
            if len(self._buf) < self._length:
                return None
            body = bytes(self._buf[: self._length])
            del self._buf[: self._length]
        else:
            hit = self._find_delimiter()
            if hit is None:
                if len(self._buf) > self._max + MAX_PART_HEADERS:
                    raise FrameTooLarge(
                        f"MJPEG part exceeds the {self._max}-byte limit; reading stopped",
                        limit=self._max,
                    )
                return None
            body = bytes(self._buf[: hit[0]]).removesuffix(b"\r\n").removesuffix(b"\n")
            # Leave the delimiter for the next part's preamble step.
            del self._buf[: hit[0]]
        if len(body) > self._max:
            raise FrameTooLarge(f"MJPEG part exceeds the {self._max}-byte limit", limit=self._max)
        self._state = "preamble"
        return body
