"""What the API and the auth routes need from a device of each kind, whatever drives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast, runtime_checkable

if TYPE_CHECKING:
    from drivers.camera.jpeg import Frame
    from drivers.cardreader.records import SocialSecurityCard
    from drivers.idcard.card_types import IdDocument
    from drivers.printer.driver import PrintResult
    from drivers.printer.job import PrintJob

T = TypeVar("T")


@runtime_checkable
class IdCardReader(Protocol):
    """Reads the identity document on its reader."""

    async def read_card(self, *, timeout: float | None = None, fingerprint: bool = False) -> IdDocument: ...


@runtime_checkable
class CardReader(Protocol):
    """Reads smart cards: the social security card, a staff card's id."""

    async def read_social_security(self, *, timeout: float | None = None) -> SocialSecurityCard: ...

    async def read_card_id(self, *, timeout: float | None = None) -> str: ...


@runtime_checkable
class Printer(Protocol):
    """Prints a receipt job."""

    async def print_job(self, job: PrintJob, *, timeout: float | None = None) -> PrintResult: ...


@runtime_checkable
class Camera(Protocol):
    """Takes one JPEG frame."""

    async def capture(self, *, timeout: float | None = None) -> Frame: ...


@dataclass(frozen=True, slots=True)
class Capability(Generic[T]):
    """The Protocol every device of one kind satisfies, checked when a route takes the device."""

    protocol: Any  # the Protocol class (mypy does not let a Protocol stand for type[T])
    kind: str

    def of(self, device: object) -> T:
        """`device` as this capability; TypeError when its driver lacks it."""
        if not isinstance(device, self.protocol):
            raise TypeError(f"{type(device).__name__} is not a {self.protocol.__name__}")
        return cast(T, device)


IDCARD_READER: Capability[IdCardReader] = Capability(IdCardReader, "idcard")
CARD_READER: Capability[CardReader] = Capability(CardReader, "cardreader")
PRINTER: Capability[Printer] = Capability(Printer, "printer")
CAMERA: Capability[Camera] = Capability(Camera, "camera")

# Every kind of device, in the order stations list them.
CAPABILITIES: tuple[Capability[Any], ...] = (IDCARD_READER, CARD_READER, PRINTER, CAMERA)
