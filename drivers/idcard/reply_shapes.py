"""Which SAM_V reply can answer which command: one table of status and data-length shapes.

SAM_V replies name no command (`SW1 SW2 SW3 [data]`, /work/shared/protocols.md), but each
command's successful answer has its own status and data length: a late answer to an abandoned
command that turns up while another command waits is told apart by its shape (a SAM id is not a
find result, select data is not card data). The lengths are the protocol's (SAM id 16 bytes,
find 4, select 8, appended address 70 bytes of UCS-2, card data 4 + 256 + 1024 and more),
loosened where real readers differ (a select or an address answered with a bare OK).
Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from drivers.idcard.frames import PHOTO_LEN, TEXT_LEN, Command, Reply, Status

SAM_ID_LEN: Final = 16
# The shortest read reply: two big-endian block lengths, the text block, the photo block.
CARD_DATA_MIN: Final = 4 + TEXT_LEN + PHOTO_LEN


@dataclass(frozen=True, slots=True)
class Shape:
    """A successful reply's status and the data lengths (inclusive bounds) allowed with it."""

    status: Status
    min_len: int = 0
    max_len: int | None = None
    even: bool = False

    def admits(self, reply: Reply) -> bool:
        n = len(reply.data)
        return (
            reply.sw3 == self.status
            and n >= self.min_len
            and (self.max_len is None or n <= self.max_len)
            and (not self.even or n % 2 == 0)
        )


_BARE_OK = Shape(Status.OK, max_len=0)
_CARD_DATA = Shape(Status.OK, min_len=CARD_DATA_MIN)

# What answers what. A command's reply fits when one of its shapes admits it.
ANSWERS: Final[dict[Command, tuple[Shape, ...]]] = {
    Command.RESET_SAM: (_BARE_OK,),
    Command.STATUS: (_BARE_OK,),
    Command.SAM_ID: (Shape(Status.OK, min_len=SAM_ID_LEN, max_len=SAM_ID_LEN),),
    Command.FIND_CARD: (Shape(Status.FIND_OK, max_len=SAM_ID_LEN - 1),),
    # 8 zero bytes by the protocol; a reader that sends none must still be able to read.
    Command.SELECT_CARD: (Shape(Status.OK, max_len=SAM_ID_LEN - 1),),
    # UCS-2 text (70 bytes by the protocol; some readers answer OK with none), or 91: no address.
    Command.READ_NEW_ADDRESS: (
        Shape(Status.OK, max_len=CARD_DATA_MIN - 1, even=True),
        Shape(Status.NO_CONTENT, max_len=0),
    ),
    Command.READ_TEXT_PHOTO: (_CARD_DATA,),
    Command.READ_WITH_FINGERPRINT: (_CARD_DATA,),
}

# A status no command's shape names is an error status: it carries no data.
SUCCESS: Final = frozenset(shape.status for shapes in ANSWERS.values() for shape in shapes)


def reply_fits(command: Command, reply: Reply) -> bool:
    """Whether `reply` can be the answer to `command`: an error status without data fits any
    command; a successful one only the commands whose shape admits it."""
    if reply.sw3 not in SUCCESS:
        return not reply.data
    return any(shape.admits(reply) for shape in ANSWERS[command])
