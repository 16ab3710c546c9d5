"""The `edge-gateway` command line: run, diag, config check, keys, verify, support-bundle."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.config import GatewayConfig, load_config
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


def _load_or_exit(path: str | None) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        print(f"edge-gateway: invalid configuration: {err}", file=sys.stderr)
        raise SystemExit(2) from err


def _cmd_keys(args: argparse.Namespace) -> int:
    from gateway.uplink.keys import KeyStoreError, init_key, load_key, rotate_key

    config = _load_or_exit(args.config)
    path = config.key_path
    try:
        if args.keys_command == "init":
            key = init_key(path, config.node.id)
            print(f"created {path} (kid {key.kid})")
        elif args.keys_command == "show":
            key = load_key(path, config.node.id)
            if args.public:
                print(json.dumps(key.public_jwk, indent=2))
            else:
                print(f"file: {path}\nkid: {key.kid}\nthumbprint: {key.thumbprint}")
        else:
            rotation = rotate_key(path, config.node.id, overlap_s=config.uplink.key_overlap_s)
            from gateway.uplink.rotation import write_pending_announcement

            write_pending_announcement(config.state_dir, rotation)
            print(
                f"rotated: new kid {rotation.new.kid}; old kid {rotation.old.kid} stays valid until "
                f"{rotation.old_not_after.isoformat()}; the daemon announces the rotation (signed by "
                "the old key) on its next start or SIGHUP"
            )
    except KeyStoreError as err:
        print(f"edge-gateway: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from gateway.uplink.keys import KeyRing, KeyStoreError
    from gateway.uplink.verifier import verify_lines

    try:
        ring = KeyRing.from_files(args.key)
    except (KeyStoreError, OSError, ValueError) as err:
        print(f"edge-gateway: cannot load keys: {err}", file=sys.stderr)
        return 2
    files = args.file or ["-"]
    if files.count("-") > 1:
        print("edge-gateway: stdin (-) can be given once", file=sys.stderr)
        return 2
    # Several files are several consumers' logs of shared streams: merged, order by seq.
    merged = args.merged or len(files) > 1
    lines: list[bytes] = []
    for name in files:
        try:
            if name == "-":
                lines.extend(sys.stdin.buffer)
            else:
                with open(name, "rb") as handle:
                    lines.extend(handle)
        except OSError as err:
            print(f"edge-gateway: cannot read {name}: {err.strerror}", file=sys.stderr)
            return 2
    report = verify_lines(lines, ring, merged=merged)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.format_report())
    return 0 if report.ok else 1


def _cmd_outbox_ack(args: argparse.Namespace) -> int:
    from gateway.uplink.outbox import incidents

    config = _load_or_exit(args.config)
    db = config.state_dir / config.outbox.file
    path = incidents.journal_path(db)
    try:
        acknowledged = incidents.acknowledge(path)
    except OSError as err:
        print(f"edge-gateway: cannot update {path}: {err.strerror}", file=sys.stderr)
        return 1
    if not acknowledged:
        print(f"no open storage incident in {path}")
    for incident in acknowledged:
        print(f"acknowledged {incident.id}: {incident.kind}, {incident.possibly_lost} possibly lost")
    return 0


def _cmd_diag(args: argparse.Namespace) -> int:
    from gateway.ops.diag import run_diag

    return run_diag(args.config, as_json=args.json, only=args.only)


def _cmd_support_bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.ops.bundle import make_bundle

    return make_bundle(args.config, Path(args.output))


def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `-c/--config` option every command that reads the config takes."""
    p.add_argument(
        "-c",
        "--config",
        help="config file (default: $EDGE_GATEWAY_CONFIG, "
        "/etc/edge-gateway/gateway.toml, else the embedded default)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway", description="Kiosk edge daemon: peripherals, 2FA, signed uplink."
    )
    parser.add_argument("--version", action="version", version=f"edge-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = with_config(sub.add_parser("run", help="run the daemon in the foreground"))
    run.set_defaults(func=_cmd_run)
    _add_config_and_keys(sub)
    _add_verify(sub)
    _add_ops(sub)

    from gateway.devcloud.cli import add_parser as add_devcloud_parser

    add_devcloud_parser(sub)
    return parser


def _add_config_and_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = with_config(config_sub.add_parser("check", help="validate the configuration"))
    check.set_defaults(func=_cmd_config_check)

    keys = sub.add_parser("keys", help="the node signing key")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    with_config(keys_sub.add_parser("init", help="create the node key (refuses to overwrite)"))
    show = with_config(keys_sub.add_parser("show", help="show the node key's kid"))
    show.add_argument("--public", action="store_true", help="print the public JWK")
    with_config(
        keys_sub.add_parser(
            "rotate", help="replace the key; the old one stays valid for uplink.key_overlap_s"
        )
    )
    keys.set_defaults(func=_cmd_keys)


def _add_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = sub.add_parser(
        "verify",
        help="check envelopes (one JSON per line): signatures, sequence gaps, duplicates, hash chain",
    )
    verify.add_argument(
        "--key",
        action="append",
        required=True,
        help="a JWK or JWK Set file of trusted public keys (repeatable)",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.add_argument(
        "--merged",
        action="store_true",
        help="the input merges several consumers' logs: order by seq, do not report arrival order "
        "(implied by several files)",
    )
    verify.add_argument(
        "file",
        nargs="*",
        help="files of envelopes, or - for stdin (default); several files are checked as one merged input",
    )
    verify.set_defaults(func=_cmd_verify)


def _add_ops(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.ops.diag import add_arguments as add_diag_arguments

    diag = with_config(
        sub.add_parser(
            "diag",
            help="ops checks: config, keys, clock, disk, socket, "
            "devices, broker, outbox, systemd (works with the daemon down)",
        )
    )
    add_diag_arguments(diag)
    diag.set_defaults(func=_cmd_diag)

    ack = with_config(
        sub.add_parser(
            "outbox-ack",
            help="acknowledge the outbox's storage incidents (lost WAL tail, corrupt or lost file): "
            "diag stops reporting them",
        )
    )
    ack.set_defaults(func=_cmd_outbox_ack)

    bundle = with_config(
        sub.add_parser(
            "support-bundle",
            help="a tar.gz for support: logs, redacted config, diag, versions; no personal data",
        )
    )
    bundle.add_argument("-o", "--output", required=True, help="the tar.gz to write")
    bundle.set_defaults(func=_cmd_support_bundle)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    if args.command != "run":
        # Tools print their results on stdout; their log lines go to stderr, warnings and up.
        from gateway.logs import configure_logging

        configure_logging("warning", "auto", stream=sys.stderr)
    try:
        result: int = args.func(args)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    return result
