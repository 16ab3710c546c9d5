"""The driver end to end through pcscd + vpcd with the virtual card: the real PC/SC stack."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.base import DeviceState, UserActionNeeded
from drivers.cardreader import (
    BankCardInfo,
    CardRemoved,
    CardTimeout,
    NoCardPresented,
    PcscCardReader,
    ReaderUnavailable,
    SocialSecurityCard,
    WrongCard,
)
from drivers.cardreader.errors import SecurityStatusNotSatisfied
from drivers.cardreader.records import id_check_char
from drivers.cardreader.vcard import (
    BankApplet,
    CardFaults,
    SocialSecurityApplet,
    SocialSecurityData,
    StaffApplet,
    VirtualCard,
)
from tests.cardreader.conftest import EventLog
from tests.support.pcsc import PcscDaemon, packaged_vpcd_port

MakeCard = Callable[..., VirtualCard]
PERSONAL = ("11010519491231002X", "测试持卡人", "TEST00001", "6200000000000000", "110100D156000005")


def card_seen(reader: PcscCardReader) -> bool:
    """Read through a call so mypy does not keep an earlier narrowing across awaits."""
    return reader.card_present


async def wait_state(reader: PcscCardReader, state: DeviceState, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while reader.status.state is not state:
            await asyncio.sleep(0.02)


async def test_reads_a_social_security_card(
    reader: PcscCardReader, events: EventLog, make_card: MakeCard
) -> None:
    card = make_card(SocialSecurityApplet())
    await card.insert()
    result = await reader.read_social_security(timeout=10)
    assert result == SocialSecurityCard(
        card_identifier="110100D15600000512345678FFFFFFFF",
        card_number="TEST00001",
        issuing_region="110100",
        spec_version="3.00",
        issued_on=dt.date(2020, 1, 1),
        expires_on=dt.date(2030, 1, 1),
        id_number="11010519491231002X",
        name="测试持卡人",
    )
    # T=1: every item read by its position, each answered at once (Le 00 = all of it).
    reads = [c.hex().upper() for c in card.commands if c[1] == 0xB2]
    assert reads == ["00B20104", "00B20304", "00B20504", "00B20604", "00B20704", "00B20104", "00B20204"]
    assert {a.hex() for a in card.answers} == {"9000"}
    assert reader.status.state is DeviceState.ONLINE
    assert reader.status.last_success_at is not None
    assert "card_inserted" in events.kinds()
    for event in events.events:
        for secret in PERSONAL:
            assert secret not in repr(event.data)


async def test_reads_configured_card_data(reader: PcscCardReader, make_card: MakeCard) -> None:
    number = "44030419800101001"
    data = SocialSecurityData(
        card_identifier=bytes.fromhex("440300D15600009912345678FFFFFFFF"),
        id_number=number + id_check_char(number),
        name="另一位测试",
        expires_on=None,
    )
    await make_card(SocialSecurityApplet(data)).insert()
    result = await reader.read_social_security(timeout=10)
    assert (result.issuing_region, result.id_number, result.name, result.expires_on) == (
        "440300",
        data.id_number,
        "另一位测试",
        None,
    )


async def test_reads_a_bank_card_label_and_aid_only(reader: PcscCardReader, make_card: MakeCard) -> None:
    card = make_card(BankApplet())
    await card.insert()
    info = await reader.read_bank_card(timeout=10)
    assert info == BankCardInfo(aid="A000000333010101", label="UnionPay Debit", source="ppse")
    # Only SELECT PPSE went to the card: no application, no record, no PAN.
    assert [c.hex().upper() for c in card.commands] == ["00A40400"]


async def test_reads_a_staff_card_identifier(reader: PcscCardReader, make_card: MakeCard) -> None:
    await make_card(StaffApplet(uid=bytes.fromhex("04A1B2C3D4E5F6"))).insert()
    assert await reader.read_card_id(timeout=10) == "04A1B2C3D4E5F6"


async def test_wrong_card_kind_is_a_user_error(reader: PcscCardReader, make_card: MakeCard) -> None:
    await make_card(BankApplet()).insert()
    with pytest.raises(WrongCard) as info:
        await reader.read_social_security(timeout=10)
    assert isinstance(info.value, UserActionNeeded)
    assert info.value.expected == "sscard"
    with pytest.raises(WrongCard):
        await reader.read_card_id(timeout=10)


async def test_insert_and_remove_events(
    reader: PcscCardReader, events: EventLog, make_card: MakeCard
) -> None:
    await events.wait_for("reader_plugged", reader="Virtual PCD 00 00")
    card = make_card(StaffApplet())
    await card.insert()
    inserted = await events.wait_for("card_inserted")
    assert inserted.data["reader"] == "Virtual PCD 00 00"
    assert str(inserted.data["atr"]).startswith("3B")
    assert card_seen(reader)
    mark = len(events.events)
    await card.remove()
    await events.wait_for("card_removed", after=mark)
    assert not card_seen(reader)
    await card.insert()
    await events.wait_for("card_inserted", after=mark)


async def test_no_card_within_timeout(reader: PcscCardReader) -> None:
    await wait_state(reader, DeviceState.ONLINE)
    with pytest.raises(NoCardPresented) as info:
        await reader.read_social_security(timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, UserActionNeeded)


async def test_read_waits_for_a_card_presented_later(reader: PcscCardReader, make_card: MakeCard) -> None:
    await wait_state(reader, DeviceState.ONLINE)
    read = asyncio.create_task(reader.read_card_id(timeout=10))
    await asyncio.sleep(0.3)
    assert not read.done()
    await make_card(StaffApplet()).insert()
    assert await read == "04A1B2C3D4E5F6"


async def test_card_pulled_mid_read_then_reader_recovers(
    reader: PcscCardReader, events: EventLog, make_card: MakeCard
) -> None:
    card = make_card(SocialSecurityApplet(), CardFaults(remove_after_apdus=5))
    await card.insert()
    with pytest.raises(CardRemoved) as info:
        await reader.read_social_security(timeout=10)
    assert isinstance(info.value, UserActionNeeded)
    assert "removed" in str(info.value)
    await events.wait_for("card_removed")
    assert reader.status.state is DeviceState.ONLINE
    await card.insert()
    result = await reader.read_social_security(timeout=10)
    assert result.id_number == "11010519491231002X"


async def test_mute_card_times_out_then_reader_recovers(reader: PcscCardReader, make_card: MakeCard) -> None:
    card = make_card(SocialSecurityApplet(), CardFaults(mute=True))
    await card.insert()
    with pytest.raises(CardTimeout) as info:
        await reader.read_social_security(timeout=10)
    assert isinstance(info.value, TimeoutError)
    await card.remove()  # unsticks pcscd's transmit
    card.faults.mute = False
    await card.insert()
    result = await reader.read_social_security(timeout=10)
    assert result.card_number == "TEST00001"


async def test_wrong_status_words_become_typed_errors(reader: PcscCardReader, make_card: MakeCard) -> None:
    card = make_card(SocialSecurityApplet(), CardFaults(status_words={0xB2: 0x6982}))
    await card.insert()
    with pytest.raises(SecurityStatusNotSatisfied) as info:
        await reader.read_social_security(timeout=10)
    assert info.value.code == "6982"
    card.faults.status_words = {0xA4: 0x6A82}
    with pytest.raises(WrongCard):
        await reader.read_social_security(timeout=10)
    card.faults.status_words = {}
    assert (await reader.read_social_security(timeout=10)).name == "测试持卡人"


async def test_pcscd_stopped_gives_no_device_and_comes_back(
    pcscd: PcscDaemon, reader: PcscCardReader, events: EventLog, make_card: MakeCard
) -> None:
    if not pcscd.owned:
        pytest.fail(
            f"pcscd (pid {pcscd.pid}) was running before the tests and is not ours to stop; "
            "stop it and rerun so this test can kill and restart its own",
            pytrace=False,
        )
    card = make_card(StaffApplet())
    await card.insert()
    assert await reader.read_card_id(timeout=10) == "04A1B2C3D4E5F6"
    try:
        await asyncio.to_thread(pcscd.stop)
        await wait_state(reader, DeviceState.NO_DEVICE)
        assert "pcscd" in reader.status.reason
        await events.wait_for("reader_unplugged")
        with pytest.raises(ReaderUnavailable) as info:
            await reader.read_card_id(timeout=5)
        assert info.value.state is DeviceState.NO_DEVICE
    finally:
        await asyncio.to_thread(pcscd.start)
    await wait_state(reader, DeviceState.ONLINE)
    # The card's connection died with vpcd; present it again.
    await card.remove()
    await card.insert()
    assert await reader.read_card_id(timeout=10) == "04A1B2C3D4E5F6"
    assert (await reader.probe(timeout=2)).state is DeviceState.ONLINE


async def test_our_pcscd_comes_up_with_the_packaged_vpcd_port_taken(
    pcscd: PcscDaemon, reader: PcscCardReader, make_card: MakeCard
) -> None:
    """Another pcscd on the same network (a CI sandbox beside the host's own) holds 35963."""
    if not pcscd.owned:
        pytest.fail(f"pcscd (pid {pcscd.pid}) is not ours to restart; stop it and rerun", pytrace=False)
    packaged = packaged_vpcd_port()
    assert pcscd.vpcd_port not in (packaged, packaged + 1)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        squatter.bind(("0.0.0.0", packaged))
        squatter.listen()
    except OSError:
        squatter.close()  # already held by someone else: the condition this test sets up
    try:
        await asyncio.to_thread(pcscd.restart)
        await wait_state(reader, DeviceState.ONLINE)
        card = make_card(StaffApplet())
        await card.insert()
        assert await reader.read_card_id(timeout=10) == "04A1B2C3D4E5F6"
    finally:
        squatter.close()


async def test_unknown_reader_is_no_device(pcscd: PcscDaemon) -> None:
    device = PcscCardReader("cardreader", reader="No Such Reader", poll_interval=0.05)
    await device.start()
    try:
        await wait_state(device, DeviceState.NO_DEVICE)
        assert "No Such Reader" in device.status.reason
        with pytest.raises(ReaderUnavailable):
            await device.read_card_id(timeout=1)
    finally:
        await device.close()
    assert device.status.state is DeviceState.OFFLINE


async def test_without_pyscard_the_device_is_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smartcard", None)
    monkeypatch.setitem(sys.modules, "smartcard.scard", None)
    device = PcscCardReader("cardreader")
    await device.start()
    try:
        assert device.status.state is DeviceState.NO_DEVICE
        assert "pyscard" in device.status.reason
        assert (await device.probe()).state is DeviceState.NO_DEVICE
        with pytest.raises(ReaderUnavailable) as info:
            await device.read_social_security(timeout=1)
        assert info.value.state is DeviceState.NO_DEVICE
    finally:
        await device.close()


async def test_close_wakes_a_waiting_read(reader: PcscCardReader) -> None:
    await wait_state(reader, DeviceState.ONLINE)
    read = asyncio.create_task(reader.read_social_security(timeout=10))
    await asyncio.sleep(0.1)
    await reader.close()
    with pytest.raises(ReaderUnavailable):
        await read


async def test_virtual_card_command_line(pcscd: PcscDaemon, reader: PcscCardReader, events: EventLog) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "drivers.cardreader.vcard",
        "--personality",
        "staff",
        "--port",
        str(pcscd.vpcd_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            while b"inserted" not in (line := await process.stdout.readline()):
                assert line, "vcard exited before inserting the card"
        assert await reader.read_card_id(timeout=10) == "04A1B2C3D4E5F6"
        mark = len(events.events)
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0
        await events.wait_for("card_removed", after=mark)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
