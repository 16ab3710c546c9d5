"""Fixtures for the card reader: one pcscd per session, a driver on vpcd's reader, virtual cards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from drivers.base import DeviceEvent
from drivers.cardreader import PcscCardReader
from drivers.cardreader.vcard import Applet, CardFaults, VirtualCard
from tests.support.pcsc import (
    VPCD_READER,
    PcscDaemon,
    PcscStackMissing,
    require_pcsc_stack,
    wait_card_state,
)


@pytest.fixture(scope="session")
def pcscd() -> Iterator[PcscDaemon]:
    """pcscd with vpcd, started once per session (or a running one reused)."""
    try:
        require_pcsc_stack()
    except PcscStackMissing as err:
        pytest.fail(str(err), pytrace=False)
    daemon = PcscDaemon()
    daemon.start()
    yield daemon
    if daemon.owned:
        daemon.stop()


class EventLog:
    """Collects a device's events and lets a test wait for one kind."""

    def __init__(self) -> None:
        self.events: list[DeviceEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: DeviceEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    async def wait_for(
        self, kind: str, *, after: int = 0, timeout: float = 5.0, **data: object
    ) -> DeviceEvent:
        """The first event of `kind` (matching `data`) at index >= after."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event.kind == kind and all(event.data.get(k) == v for k, v in data.items()):
                        return event
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def reader(pcscd: PcscDaemon) -> AsyncIterator[PcscCardReader]:
    device = PcscCardReader("cardreader", reader=VPCD_READER, poll_interval=0.05, apdu_timeout=1.0)
    await device.start()
    yield device
    await device.close()


@pytest.fixture
def events(reader: PcscCardReader) -> EventLog:
    log = EventLog()
    reader.subscribe(log)
    return log


@pytest.fixture
async def make_card(pcscd: PcscDaemon) -> AsyncIterator[Callable[..., VirtualCard]]:
    """Builds virtual cards for vpcd's first slot; all are removed (and seen gone) at the end."""
    cards: list[VirtualCard] = []

    def make(applet: Applet, faults: CardFaults | None = None) -> VirtualCard:
        card = VirtualCard(applet, faults=faults, port=pcscd.vpcd_port)
        cards.append(card)
        return card

    yield make
    for card in cards:
        await card.remove()
    # The next test must start with an empty reader, not a removal pcscd has yet to notice.
    # Bounded again outside the thread: a pcsclite call stuck on a wedged pcscd fails fast here.
    async with asyncio.timeout(15):
        await asyncio.to_thread(wait_card_state, False, timeout=5.0)
