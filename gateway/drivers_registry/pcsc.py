"""The PC/SC smart card reader (`driver = "pcsc"`): its config table and how the gateway builds it."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import structlog

from gateway.configbase import PositiveFloat, QueueConfig, Section
from gateway.drivers_registry.capabilities import CARD_READER
from gateway.drivers_registry.entry import Built, DriverEntry
from gateway.ops.checks import CheckResult, Verdict
from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")


class PcscDevice(Section, tag_field="driver", tag="pcsc"):
    reader: str = ""
    poll_interval_s: PositiveFloat = 0.3
    apdu_timeout_s: PositiveFloat = 3.0
    # Start the virtual card (vpcd) with this personality: "", "sscard", "sscard-t0", "bank",
    # "bank-contact", "staff" (docs/cardreader.md).
    simulate: Literal["", "sscard", "sscard-t0", "bank", "bank-contact", "staff"] = ""
    # Simulator only: the TCP port vpcd waits on for the virtual card (its reader.conf CHANNELID).
    sim_vpcd_port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 35_963
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)


async def build(name: str, cfg: PcscDevice, stack: AsyncExitStack) -> Built:
    """The reader; `simulate` starts a virtual card in vpcd's slot (once pcscd is there)."""
    from drivers.cardreader.driver import PcscCardReader

    reader = cfg.reader
    simulator: Any = None
    if cfg.simulate:
        from drivers.cardreader.vcard import VIRTUAL_READER, VirtualCard, personality

        simulator = VirtualCard(personality(cfg.simulate), port=cfg.sim_vpcd_port)
        reader = reader or VIRTUAL_READER
        stack.push_async_callback(simulator.remove)
        # The card goes into vpcd's slot once pcscd is there; without pcscd the reader says so.
        task = asyncio.create_task(_insert_virtual_card(name, simulator), name=f"{name}-vcard")
        stack.push_async_callback(cancel_and_wait, task)
    device = PcscCardReader(
        name, reader=reader, poll_interval=cfg.poll_interval_s, apdu_timeout=cfg.apdu_timeout_s
    )
    return device, simulator


async def _insert_virtual_card(name: str, card: Any) -> None:
    from drivers.cardreader.vcard import VirtualCardError

    try:
        await card.insert(timeout=30.0)
    except VirtualCardError as err:
        log.warning("virtual_card_not_inserted", device=name, error=str(err))


def target(cfg: PcscDevice) -> str:
    return cfg.reader or "first PC/SC reader"


async def probe(check: str, cfg: PcscDevice, fix: str, timeout: float) -> CheckResult:
    """Without the daemon only pcscd's socket can be seen, not the reader behind it."""
    data = {"driver": "pcsc", "source": "direct"}
    if await asyncio.to_thread(PCSCD_SOCKET.exists):
        detail = f"pcscd socket present; {target(cfg)} not checked without the daemon"
        return CheckResult(check, Verdict.PASS, detail, data=data)
    return CheckResult(check, Verdict.FAIL, f"pcscd is not running (no {PCSCD_SOCKET})", fix=fix, data=data)


def fix(target: str) -> str:
    return "check pcscd runs (`systemctl status pcscd`) and the reader is plugged (`pcsc_scan`)"


def simulated(cfg: PcscDevice) -> bool:
    return bool(cfg.simulate)


ENTRY = DriverEntry(
    config=PcscDevice,
    capability=CARD_READER,
    build=build,
    target=target,
    probe=probe,
    fix=fix,
    simulated=simulated,
)
