"""Config validation: typed, unknown keys and bad values rejected with the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError


def test_embedded_default_is_valid() -> None:
    config = parse_config(
        (Path(__file__).parents[2] / "gateway" / "default.toml").read_text(), source="default"
    )
    assert config.node.id == "edge-dev"
    assert config.api.max_sessions == 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[node]\nidd = 'x'\n", "node.idd: unknown key"),
        ("[api]\nmax_sessions = 'many'\n", "api.max_sessions: Expected `int`, got `str`"),
        ("[api]\nmax_sessions = 0\n", "api.max_sessions"),
        ("[api]\nsocket_mode = '0999'\n", "api.socket_mode"),
        ("[api]\ndebug_tcp = '10.1.2.3:8080'\n", "non-loopback"),
        ("[uplink]\nbroker = 'http://x'\n", "uplink"),
        ("[bogus]\n", "bogus: unknown key"),
        ("[devices.idcard]\ndriver = 'nope'\nport = 'x'\n", "devices.idcard"),
        ("[devices.idcard]\ndriver = 'samv'\n", "devices.idcard.port: required key is missing"),
        ("[devices.idcard]\ndriver = 'samv'\nport='x'\nspeed=1\n", "devices.idcard.speed: unknown key"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="test.toml")
    assert expected in str(info.value)
    assert str(info.value).startswith("test.toml: ")


def test_config_check_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nmax_sesions = 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "api.max_sesions: unknown key" in result.stderr


def test_config_check_accepts_good_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[node]\nid = 'edge-042'\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", "-c", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "edge-042" in result.stdout


def test_run_refuses_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nmax_sessions = 'lots'\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "api.max_sessions" in result.stderr


def test_env_variable_selects_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[node]\nid = 'from-env'\n")
    monkeypatch.setenv("EDGE_GATEWAY_CONFIG", str(path))
    assert load_config(None).node.id == "from-env"
    assert load_config(None).source == str(path)


def test_production_example_is_valid() -> None:
    path = Path(__file__).parents[2] / "config" / "gateway.example.toml"
    config = parse_config(path.read_text(), source=str(path))
    assert config.node.auto_init_key is False
    assert set(config.devices) == {"idcard", "printer", "cardreader", "camera"}


def test_production_example_starts_on_a_fresh_box_and_shows_the_uplink_to_set_up() -> None:
    """As install.sh installs it, the example names no file that a fresh box lacks (the daemon would
    refuse to start); the uplink is off, and the lines to turn on are there, mqtts with TLS files."""
    from gateway.startup import file_problems

    path = Path(__file__).parents[2] / "config" / "gateway.example.toml"
    text = path.read_text()
    config = parse_config(text, source=str(path))
    assert file_problems(config) == []
    assert config.uplink.broker == ""
    assert config.uplink.cloud_keys == []
    uplink_keys = ("broker", "ca_file", "client_cert", "client_key", "cloud_keys")
    enabled = "\n".join(
        line.removeprefix("# ") if line.startswith(tuple(f"# {key} = " for key in uplink_keys)) else line
        for line in text.splitlines()
    )
    uplink = parse_config(enabled, source="uncommented").uplink
    assert uplink.broker.startswith("mqtts://")
    assert (uplink.ca_file, uplink.client_cert, uplink.client_key) == (
        "/etc/edge-gateway/ca.pem",
        "/etc/edge-gateway/node.crt",
        "/etc/edge-gateway/node.key",
    )
    assert uplink.cloud_keys == ["/etc/edge-gateway/cloud.jwk"]
