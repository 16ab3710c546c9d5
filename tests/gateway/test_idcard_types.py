"""End to end through the daemon (a real subprocess): a citizen with a foreigner's permanent residence
card (`I`, or the 2023 `Y`) or an HMT residence permit (`J`) proves the idcard factor and the face
against that card's photo; the subject is the masked document number; no name or number reaches the
logs. A card of an unknown type answers 409 unsupported-card-type."""

from __future__ import annotations

from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from drivers.base import UserActionNeeded
from drivers.idcard import (
    ForeignPermanentCard,
    ForeignPermanentCard2023,
    HmtResidencePermit,
    IdDocument,
    UnsupportedCard,
)
from drivers.idcard.simulator import SIM_CARDS, sim_card
from gateway.api.errors import to_problem
from gateway.config import SamvDevice, parse_config
from gateway.errors import ConfigError
from tests.auth.face_service import FaceService
from tests.support.daemon import running_daemon, unix_session, write_config
from tests.support.mosquitto import free_port


def config(face_url: str, card: str) -> str:
    return f"""
[uplink]
broker = "mqtt://127.0.0.1:{free_port()}"

[auth.face]
verifier = "http"
url = "{face_url}"
timeout_s = 2

[devices.idcard]
driver = "samv"
port = "sim://idcard"
sim_card = "{card}"

[devices.camera]
driver = "http"
url = "sim://camera"
"""


def secrets(card: IdDocument) -> list[str]:
    """What must never reach a log: names, numbers, addresses of the card presented."""
    if isinstance(card, ForeignPermanentCard):
        return [card.number, card.english_name, card.chinese_name, card.number[3:14]]
    if isinstance(card, ForeignPermanentCard2023):
        return [card.number, card.english_name, card.english_name[:35], card.chinese_name]
    assert isinstance(card, HmtResidencePermit)
    return [card.id_number, card.name, card.address, card.issuer, card.travel_permit_number]


def all_logs(dp_lines: list[str], state_dir: Path) -> str:
    text = "\n".join(dp_lines)
    for log_file in (state_dir / "log").glob("gateway.jsonl*"):
        text += log_file.read_text()
    return text


@pytest.mark.parametrize("kind", ["foreign_permanent", "hmt_residence", "foreign_permanent_2023"])
async def test_citizen_with_another_holders_card_proves_two_factors(
    state_dir: Path, face_service: FaceService, kind: str
) -> None:
    card = sim_card(kind)
    assert isinstance(card, ForeignPermanentCard | HmtResidencePermit | ForeignPermanentCard2023)
    masked = card.masked_number
    path = write_config(state_dir, config(face_service.url, kind))
    async with running_daemon(path) as dp, unix_session(dp.socket_path) as http:
        body = await (await http.post("/v1/sessions", json={})).json()
        base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
        resp = await http.post(f"{base}/factors/idcard", headers=auth)
        assert resp.status == 200, await resp.text()
        proven = await resp.json()
        assert proven["factor"]["kind"] == "idcard"
        assert proven["factor"]["document_type"] == kind
        assert proven["factor"]["subject"] == masked
        assert proven["factor"]["subject_kind"] == "citizen"
        assert proven["assurance"]["level"] == "single"
        # Second factor: the face, compared with the photo of this very card.
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 200, await resp.text()
        two = await resp.json()
        assert two["assurance"]["level"] == "two_factor"
        assert two["factor"]["subject"] == masked, "same subject for both factors"
        assert face_service.requests[-1]["reference"] == card.photo
        view = await (await http.get(base, headers=auth)).text()
        assert masked in view
        exposed = view + await (await http.get("/v1/status")).text()
        assert [s for s in secrets(card) if s and s in exposed] == []
        await dp.stop()
    logs = all_logs(dp.stdout_lines + dp.stderr_lines, state_dir)
    assert "factor_proven" in logs and masked in logs
    assert [s for s in secrets(card) if s and s in logs] == [], "logs expose personal data"


async def test_a_card_of_an_unknown_type_is_answered_unsupported(
    state_dir: Path, face_service: FaceService
) -> None:
    path = write_config(state_dir, config(face_service.url, "unknown_type"))
    async with running_daemon(path) as dp, unix_session(dp.socket_path) as http:
        body = await (await http.post("/v1/sessions", json={})).json()
        base, auth = f"/v1/sessions/{body['id']}", {"Authorization": f"Bearer {body['token']}"}
        resp = await http.post(f"{base}/factors/idcard", headers=auth)
        assert resp.status == 409
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
        assert problem["type"].endswith("/unsupported-card-type")
        assert problem["code"] == "unsupported_card_type"
        assert problem["card_type"] == "Z"
        assert problem["device"] == "idcard"
        # No card factor, so the face is refused before the camera is used.
        resp = await http.post(f"{base}/factors/face", headers=auth)
        assert resp.status == 409 and (await resp.json())["type"].endswith("/idcard-required")
        session = await (await http.get(base, headers=auth)).json()
        assert session["assurance"]["level"] == "none"
        await dp.stop()
    logs = all_logs(dp.stdout_lines + dp.stderr_lines, state_dir)
    assert "card_type_unsupported" in logs
    for secret in ("911000190001010020", "SPECIMEN", "测试样本"):  # the block's other fields
        assert secret not in logs


def test_unsupported_card_maps_to_its_own_problem_kind() -> None:
    read = to_problem(UnsupportedCard("idcard: card type Z is not supported", device="idcard", card_type="Z"))
    assert read is not None
    assert (read.status, read.kind) == (409, "unsupported-card-type")
    assert read.body()["card_type"] == "Z" and read.body()["code"] == "unsupported_card_type"
    # The reader itself refusing the card (status 40) is the same problem, without a type code.
    refused = to_problem(UnsupportedCard("idcard: the reader does not know this card type", device="idcard"))
    assert refused is not None
    assert (refused.status, refused.kind) == (409, "unsupported-card-type")
    assert "card_type" not in refused.body()
    # Other user actions keep their kind.
    other = to_problem(UserActionNeeded("idcard: card removed", device="idcard"))
    assert other is not None and other.kind == "user-action-needed"


def test_every_configurable_simulated_card_exists_and_junk_is_refused() -> None:
    kinds = get_args(get_type_hints(SamvDevice)["sim_card"])
    assert set(kinds) == set(SIM_CARDS)
    for kind in kinds:
        assert sim_card(kind) is not None
    parsed = parse_config(
        '[devices.idcard]\ndriver = "samv"\nport = "sim://idcard"\nsim_card = "hmt_residence"\n',
        source="t.toml",
    )
    device = parsed.devices["idcard"]
    assert isinstance(device, SamvDevice) and device.sim_card == "hmt_residence"
    with pytest.raises(ConfigError, match="sim_card"):
        parse_config(
            '[devices.idcard]\ndriver = "samv"\nport = "sim://x"\nsim_card = "passport"\n', source="t"
        )
