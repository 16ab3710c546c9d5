"""SIGHUP reload: live keys apply at once (levels, limits, queue depth and deadline), the rest waits."""

from __future__ import annotations

from pathlib import Path

from gateway.config import EscposDevice, parse_config
from gateway.reload import merge_reload
from tests.support.daemon import inprocess_daemon

PRINTER = """
[devices.printer]
driver = "escpos"
port = "sim://printer"
baudrate = 115200

[devices.printer.queue]
depth = 5
deadline_s = 20
"""


def test_merge_takes_live_keys_and_reports_the_rest() -> None:
    old = parse_config(PRINTER, source="old")
    text = PRINTER.replace("depth = 5", "depth = 9").replace("sim://printer", "/dev/ttyUSB9")
    new = parse_config(text + '\n[log]\nlevel = "debug"\n[api]\ndrain_timeout_s = 3\n', source="new")
    effective, applied, restart = merge_reload(old, new)
    assert applied == ["devices.printer.queue", "log.level"]
    assert restart == ["api.drain_timeout_s", "devices.printer"]
    assert effective.devices["printer"].queue.depth == 9
    printer = effective.devices["printer"]
    assert isinstance(printer, EscposDevice)
    assert printer.port == "sim://printer", "the port waits for a restart"
    assert effective.api.drain_timeout_s == old.api.drain_timeout_s
    assert effective.log.level == "debug"


async def test_reload_changes_queue_limits_live(state_dir: Path) -> None:
    async with inprocess_daemon(state_dir, PRINTER) as gw, gw.client() as http:
        config = state_dir / "gateway.toml"
        config.write_text(
            config.read_text().replace("depth = 5", "depth = 7").replace("deadline_s = 20", "deadline_s = 4")
        )
        gw.daemon.reload()
        devices = (await (await http.get("/v1/devices")).json())["devices"]
        assert devices[0]["queue"]["depth_limit"] == 7
        assert gw.daemon.parts.devices.named("printer").queue.deadline_s == 4
