"""The `edge-gateway` command line: run, diag, config check, keys, verify, support-bundle."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.config import load_config
from gateway.errors import ConfigError


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.daemon import run_daemon

    return run_daemon(args.config)


def _cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return 2
    print(f"ok: {config.source} (node {config.node.id}, {len(config.devices)} devices)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway", description="Kiosk edge daemon: peripherals, 2FA, signed uplink."
    )
    parser.add_argument("--version", action="version", version=f"edge-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            help="config file (default: $EDGE_GATEWAY_CONFIG, "
            "/etc/edge-gateway/gateway.toml, else the embedded default)",
        )
        return p

    run = with_config(sub.add_parser("run", help="run the daemon in the foreground"))
    run.set_defaults(func=_cmd_run)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = with_config(config_sub.add_parser("check", help="validate the configuration"))
    check.set_defaults(func=_cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    result: int = args.func(args)
    return result
