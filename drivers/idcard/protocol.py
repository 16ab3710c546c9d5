"""asyncio protocol for the SAM_V reader: bytes in, Reply frames out; never raises from data."""

from __future__ import annotations

import structlog

from drivers.base import DriverError, FrameError
from drivers.idcard.errors import CorruptReply
from drivers.idcard.frames import (
    HEADER_LEN,
    MAX_FRAME,
    PREAMBLE,
    Reply,
    Request,
    check_frame,
    decode_reply,
    encode_request,
    frame_len,
)
from drivers.serialio import FifoReplies, LinkProtocol, PreambleFramer

log = structlog.get_logger(__name__)


class SamvProtocol(LinkProtocol):
    """Frames the reader's byte stream and hands each reply to the request in flight."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.framer = PreambleFramer(
            PREAMBLE,
            header_len=HEADER_LEN,
            frame_len=frame_len,
            max_frame=MAX_FRAME,
            check=check_frame,
        )
        self.replies: FifoReplies[Reply] = FifoReplies()
        self.unsolicited = 0
        self.corrupt = 0

    def send(self, request: Request) -> None:
        self.write(encode_request(request))

    def resync(self) -> None:
        """Drop a partial frame: the reader stalled mid-reply and the request timed out."""
        if self.framer.pending:
            log.info("samv_resync", device=self.device, dropped=self.framer.pending)
        self.framer.reset()

    def bytes_received(self, data: bytes) -> None:
        frames, rejected = self.framer.feed(data)
        if rejected:
            self.corrupt += rejected
            log.warning("samv_corrupt_reply", device=self.device, count=rejected)
            # The reply to the command in flight is the corrupt one: fail it now, not at timeout.
            self.replies.fail_all(
                CorruptReply(f"{self.device}: reply failed its checksum", device=self.device)
            )
        for frame in frames:
            try:
                reply = decode_reply(frame)
            except FrameError as err:
                log.warning("samv_bad_frame", device=self.device, error=str(err))
                continue
            if not self.replies.resolve(reply):
                self.unsolicited += 1
                log.debug("samv_unsolicited_reply", device=self.device, status=reply.sw3)

    def fail_pending(self, exc: DriverError) -> None:
        self.replies.fail_all(exc)
