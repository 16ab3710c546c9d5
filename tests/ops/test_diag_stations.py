"""`diag` checks every station: each kind it uses needs a working device (a pool, one working member)."""

from __future__ import annotations

from pathlib import Path

from gateway.ops.diag import Verdict, diagnose
from tests.support.daemon import write_config

TABLES = """
[devices.idcard_k1]
driver = "samv"
port = "{missing}/ttyUSB9"

[devices.idcard_k2]
driver = "samv"
port = "sim://idcard_k2"

[devices.p1]
driver = "escpos"
port = "sim://p1"

[devices.p2]
driver = "escpos"
port = "{missing}/ttyUSB7"

[pools.hall]
devices = ["p1", "p2"]

[stations.k1]
label = "Hall A, kiosk 1"
idcard = "idcard_k1"
printer = "hall"

[stations.k2]
idcard = "idcard_k2"
printer = "hall"

[stations.k3]
idcard = "idcard_k2"
"""


async def test_each_station_is_judged_from_its_devices(state_dir: Path) -> None:
    config = write_config(state_dir, TABLES.format(missing=state_dir / "gone"))
    report = await diagnose(str(config), only=["station"])
    checks = {c.name: c for c in report.checks}
    assert set(checks) == {"station:k1", "station:k2", "station:k3"}
    k1, k2, k3 = checks["station:k1"], checks["station:k2"], checks["station:k3"]
    assert k1.status is Verdict.FAIL
    assert k1.detail == "Hall A, kiosk 1: idcard idcard_k1 DOWN; printer pool hall 1/2"
    assert k1.fix == "see device:idcard_k1, device:p2"
    # The pool still prints with one of two printers: a warning, not a failure.
    assert k2.status is Verdict.WARN and k2.fix == "see device:p2"
    assert k3.status is Verdict.PASS and k3.fix is None
    assert k1.data["uses"] == {"idcard": "idcard_k1", "printer": "hall"}
