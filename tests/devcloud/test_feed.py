"""The dev cloud's feed masks personal data and secrets, in both forms."""

from __future__ import annotations

import json

from gateway.devcloud.feed import Feed, masked, summary

BODY = {
    "id_number": "110101190001010014",
    "name": "测试用户",
    "address": "北京市示例区测试路1号",
    "probe": "A" * 5000,
    "code": "428913",
    "service": "pension",
    "data": {"note": "card 6222020200112233445"},
}


def test_personal_data_and_codes_are_masked() -> None:
    out = masked(BODY)
    assert out["id_number"] == "110***********0014"
    assert out["name"] == "<masked>" and out["address"] == "<masked>"
    assert out["probe"] == "<image, 5000 base64 chars>"
    assert out["code"] == "<masked>"
    assert out["service"] == "pension"
    assert out["data"]["note"] == "card 622************3445"
    text = summary(BODY)
    assert len(text) <= 160
    for secret in ("110101190001010014", "测试用户", "428913", "6222020200112233445"):
        assert secret not in text and secret not in json.dumps(out, ensure_ascii=False)


def test_json_lines_and_readable_lines() -> None:
    lines: list[str] = []
    Feed(lines.append, as_json=True, clock=lambda: 0.0).emit("uplink", "ignored", body=masked(BODY))
    Feed(lines.append, prefix="[dev-cloud] ").emit("presence", "edge-1 is online", node="edge-1")
    record = json.loads(lines[0])
    assert record["event"] == "uplink" and record["body"]["id_number"] == "110***********0014"
    assert lines[1].startswith("[dev-cloud] ") and lines[1].endswith(" edge-1 is online")
