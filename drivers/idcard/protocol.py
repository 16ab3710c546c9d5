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
from drivers.serialio import LinkProtocol, PreambleFramer
from drivers.serialio.exchange import UnnamedReplies

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
        # A command left without its reply (timed out, or its caller went away) may still be
        # answered. Replies name no command, so until that answer has come or its window has
        # passed, nothing else may be sent: the late reply would be taken for the next one's.
        # Once such a reply was waited out, a partial frame of it is dropped (resync).
        self.replies: UnnamedReplies[Reply] = UnnamedReplies(after_settle=self.resync)
        self.unsolicited = 0
        self.corrupt = 0
        self.mismatched = 0

    def send(self, request: Request) -> None:
        self.write(encode_request(request))

    def _take_late(self) -> bool:
        """A frame (or a corrupt one) arrived while a reply is owed: it is that reply."""
        if not self.replies.take_late():
            return False
        log.info("samv_late_reply_discarded", device=self.device)
        return True

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
            if not self._take_late():
                # The reply to the command in flight is the corrupt one: fail it now, not at timeout.
                self.replies.fail_all(
                    CorruptReply(f"{self.device}: reply failed its checksum", device=self.device)
                )
        for frame in frames:
            if self._take_late():
                continue
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
