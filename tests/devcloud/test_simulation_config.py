"""Production configs refuse the in-process development cloud and the simulated face comparison."""

from __future__ import annotations

import pytest

from gateway.cli import main
from gateway.config import embedded_default_text, parse_config
from gateway.errors import ConfigError

SIM_DEVICES = """
[devices.idcard]
driver = "samv"
port = "sim://idcard"

[devices.camera]
driver = "http"
url = "sim://camera"
"""
REAL_PRINTER = """
[devices.printer]
driver = "escpos"
port = "/dev/ttyUSB1"
"""


def test_the_embedded_default_is_a_simulation_using_both() -> None:
    config = parse_config(embedded_default_text(), source="<embedded default>")
    assert config.uplink.broker == "sim://cloud"
    assert config.auth.face.verifier == "sim"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ('[uplink]\nbroker = "sim://cloud"\n', "uplink.broker"),
        ('[auth.face]\nverifier = "sim"\n', "auth.face.verifier"),
    ],
)
def test_one_real_device_makes_a_config_production(settings: str, key: str) -> None:
    parse_config(settings + SIM_DEVICES, source="sim.toml")  # all simulated: accepted
    with pytest.raises(ConfigError) as err:
        parse_config(settings + SIM_DEVICES + REAL_PRINTER, source="prod.toml")
    assert str(err.value).startswith(f"prod.toml: {key}: ")
    assert "simulation" in str(err.value)
    # No device at all is not a simulation either.
    with pytest.raises(ConfigError):
        parse_config(settings, source="empty.toml")


def test_other_sim_schemes_are_not_brokers() -> None:
    with pytest.raises(ConfigError, match=r"broker must be .* or sim://cloud"):
        parse_config('[uplink]\nbroker = "sim://other"\n' + SIM_DEVICES, source="x.toml")


def test_config_check_names_the_refused_key(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "gw.toml"
    path.write_text('[uplink]\nbroker = "sim://cloud"\n' + REAL_PRINTER)
    assert main(["config", "check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "uplink.broker: sim://cloud" in err and err.count("\n") == 1


async def test_diag_skips_the_broker_check_for_the_in_process_cloud() -> None:
    from gateway.ops.diag import Verdict, check_broker

    config = parse_config(embedded_default_text(), source="<embedded default>")
    result = await check_broker(config, timeout=1.0)
    assert result.status is Verdict.SKIP
    assert "sim://cloud" in result.detail
