"""A support bundle after a kiosk-like flow holds no unmasked ID number, name or card number."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from drivers.idcard.identity import sample_card
from gateway.logs import configure_logging, mask_id
from gateway.ops.bundle import make_bundle, scrub_log_line
from tests.support.daemon import running_daemon, unix_session, write_config

CARD = sample_card()
PAN = "6222021234567890123"
KIOSK = """
[uplink]
client_cert = "/etc/edge-gateway/node.crt"
client_key = "/etc/edge-gateway/secret-node.key"

[devices.idcard]
driver = "samv"
port = "sim://idcard"
"""


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def log_like_a_kiosk_app(log_file: Path) -> None:
    """Events that carry personal data, through the real logging set-up."""
    configure_logging("info", "json", file=log_file, stream=io.StringIO())
    log = structlog.get_logger("tests.ops.kiosk")
    log.info("card_read", device="idcard", id_number=CARD.id_number, name=CARD.name, card_number=PAN)
    log.warning("reader_noise", detail=f"frame mentions {CARD.id_number} and card {PAN}")
    logging.getLogger("some.library").warning("looked up %s", CARD.id_number)
    for handler in logging.getLogger().handlers:
        handler.flush()


def legacy_rotation(log_file: Path) -> None:
    """A rotated log written before masking existed: the bundle must mask it while packing."""
    line = {
        "event": "legacy_card_read",
        "id_number": CARD.id_number,
        "name": CARD.name,
        "card_number": PAN,
        "note": f"holder id {CARD.id_number}, pan {PAN}",
    }
    log_file.with_name(log_file.name + ".1").write_text(
        json.dumps(line, ensure_ascii=False) + f"\nplain text line with {CARD.id_number}\n", encoding="utf-8"
    )


def read_bundle(path: Path) -> dict[str, str]:
    """Every file of the tar.gz by its path under the bundle's top directory."""
    members = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if handle is not None:
                members[member.name.split("/", 1)[1]] = handle.read().decode("utf-8")
    return members


async def kiosk_session(socket_path: Path) -> int:
    """A citizen sits down, presents the ID card, and leaves."""
    async with unix_session(socket_path) as client:
        created = await client.post("/v1/sessions", json={"kind": "citizen"})
        assert created.status == 201
        session = await created.json()
        auth = {"Authorization": f"Bearer {session['token']}"}
        read = await client.post(f"/v1/sessions/{session['id']}/factors/idcard", headers=auth)
        await read.read()
        assert (await client.delete(f"/v1/sessions/{session['id']}", headers=auth)).status in (200, 204)
        return read.status


async def test_bundle_after_kiosk_flow_has_no_personal_data(state_dir: Path, restore_logging: None) -> None:
    config = write_config(state_dir, KIOSK)
    log_file = state_dir / "log" / "gateway.jsonl"
    log_like_a_kiosk_app(log_file)
    legacy_rotation(log_file)

    async with running_daemon(config) as daemon:
        assert await kiosk_session(daemon.socket_path) == 200
        # Keep the daemon up for the bundle: its /v1/status goes in too.
        output = state_dir / "out" / "bundle.tar.gz"
        code = await asyncio.to_thread(make_bundle, str(config), output)
    assert code == 0
    assert output.stat().st_mode & 0o777 == 0o600

    members = read_bundle(output)
    assert {"MANIFEST.json", "config.json", "diag.json", "status.json", "versions.json"} <= set(members)
    assert {"logs/gateway.jsonl", "logs/gateway.jsonl.1"} <= set(members)

    for name, text in members.items():
        assert CARD.id_number not in text, name
        assert CARD.name not in text, name
        assert PAN not in text, name
        assert CARD.address not in text, name

    logs = members["logs/gateway.jsonl"]
    masked = mask_id(CARD.id_number)
    assert masked in logs  # the app's events are there, masked
    assert '"event": "ready"' in logs or '"event":"ready"' in logs  # and the daemon's own
    assert masked in members["logs/gateway.jsonl.1"]
    assert "secret-node.key" not in members["config.json"]
    assert json.loads(members["config.json"])["config"]["uplink"]["client_key"] == "<redacted>"
    versions = json.loads(members["versions.json"])
    assert versions["gateway"] and versions["python"] and "aiohttp" in versions["libraries"]
    diag = json.loads(members["diag.json"])
    assert {c["name"] for c in diag["checks"]} >= {"config", "daemon", "device:idcard"}
    assert json.loads(members["status.json"])["node"] == "edge-test"
    manifest = json.loads(members["MANIFEST.json"])
    assert set(manifest["members"]) == set(members) - {"MANIFEST.json"}


async def test_bundle_with_a_broken_config(state_dir: Path) -> None:
    bad = state_dir / "gateway.toml"
    bad.write_text(
        '[node]\nid = "edge-1"\ncolour = "red"\n'
        '[devices.cam]\ndriver = "http"\nurl = "x"\npassword = "hunter2"\n'
    )
    output = state_dir / "bundle.tar.gz"
    code = await asyncio.to_thread(make_bundle, str(bad), output)
    assert code == 0
    members = read_bundle(output)
    assert "node.colour: unknown key" in members["config-error.txt"]
    assert "hunter2" not in members["config.toml.redacted"]
    assert 'password = "<redacted>"' in members["config.toml.redacted"]
    assert json.loads(members["diag.json"])["exit_code"] == 2


async def test_unwritable_output_is_exit_2(state_dir: Path) -> None:
    config = write_config(state_dir)
    blocker = state_dir / "file"
    blocker.write_text("not a directory")
    assert await asyncio.to_thread(make_bundle, str(config), blocker / "bundle.tar.gz") == 2


def test_scrub_masks_personal_keys_and_numbers() -> None:
    line = json.dumps({"event": "x", "name": CARD.name, "msg": f"pan {PAN}"}, ensure_ascii=False)
    scrubbed = scrub_log_line(line)
    assert CARD.name not in scrubbed and PAN not in scrubbed
    assert json.loads(scrubbed)["name"] == "<masked>"
    assert scrub_log_line(f"not json {CARD.id_number}") == f"not json {mask_id(CARD.id_number)}"
