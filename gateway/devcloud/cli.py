"""`edge-gateway dev-cloud`: run the development cloud on a broker, or send one signed command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.devcloud.broker import BrokerCloud
from gateway.devcloud.cloud import JWK_FILE, DevCloud, load_cloud_key
from gateway.devcloud.feed import Feed
from gateway.uplink.keys import KeyRing, KeyStoreError
from gateway.uplink.mqtt import LinkConfigError, tls_context

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
NODES_DIR = "nodes"


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/edge-gateway-devcloud (or ~/.local/state/edge-gateway-devcloud)."""
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "edge-gateway-devcloud"


def _options(parser: argparse.ArgumentParser, *, nested: bool) -> None:
    # In `send`, options repeat so they may come after the subcommand; SUPPRESS keeps the outer value.
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    parser.add_argument("--broker", help=f"MQTT broker URL (default {DEFAULT_BROKER})", **default)
    parser.add_argument(
        "--state-dir",
        help="where the cloud key lives (default $XDG_STATE_HOME/edge-gateway-devcloud)",
        **default,
    )
    parser.add_argument(
        "--node-key",
        action="append",
        help="a node's public JWK file (`edge-gateway keys show --public`); repeatable. "
        f"Files in STATE_DIR/{NODES_DIR}/*.jwk are trusted too",
        **default,
    )
    parser.add_argument("--ca-file", help="CA for an mqtts:// broker", **default)
    parser.add_argument("--cert", help="client certificate for an mqtts:// broker", **default)
    parser.add_argument("--key", help="client key for an mqtts:// broker", **default)
    parser.add_argument(
        "--json", action="store_true", help="JSON lines instead of the readable feed", **default
    )


def add_parser(sub: Any) -> None:
    """Register `dev-cloud` (and `dev-cloud send`) on the main parser's subcommands."""
    dev = sub.add_parser(
        "dev-cloud",
        help="a development cloud: verifies uplinks live, shows SMS codes, sends signed commands",
        description="A development cloud for integrators (not for production).",
    )
    _options(dev, nested=False)
    dev.set_defaults(func=run_feed)
    dev_sub = dev.add_subparsers(dest="devcloud_command")
    send = dev_sub.add_parser("send", help="send one signed command and show its command_result")
    _options(send, nested=True)
    send.add_argument("node", help="the node id")
    send.add_argument("type", metavar="COMMAND", help="ping, config.set, device.reset, session.end_all, ...")
    send.add_argument("body", nargs="?", default="{}", help="its JSON arguments, e.g. '{\"values\": {...}}'")
    send.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the result")
    send.set_defaults(func=run_send)


def state_dir(args: argparse.Namespace) -> Path:
    """--state-dir, else the default."""
    return Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()


def _setup(args: argparse.Namespace, write: Any) -> tuple[DevCloud, BrokerCloud | None, str]:
    state = state_dir(args)
    key = load_cloud_key(state)
    files = [Path(p) for p in (args.node_key or [])]
    nodes = state / NODES_DIR
    if nodes.is_dir():
        files += sorted(nodes.glob("*.jwk"))
    ring = KeyRing.from_files(files)
    feed = Feed(write, as_json=args.json)
    cloud = DevCloud(key, ring, feed)
    tls = None
    broker = args.broker or DEFAULT_BROKER
    if broker.startswith("mqtts://"):
        tls = tls_context(ca_file=args.ca_file, client_cert=args.cert, client_key=args.key)
    runner = BrokerCloud(cloud, broker, tls=tls, role="send" if args.devcloud_command else "feed")
    header = (
        "edge-gateway development cloud (for development only, NOT a production cloud)\n"
        f"  cloud key {key.kid}; its public JWK for the node's uplink.cloud_keys: {state / JWK_FILE}\n"
        f"  trusted node keys: {', '.join(ring.kids()) or 'none yet'} "
        "(add with --node-key FILE from `edge-gateway keys show --public`)"
    )
    return cloud, runner, header


def _fail(message: str) -> int:
    print(f"edge-gateway dev-cloud: {message}", file=sys.stderr)
    return 2


def run_feed(args: argparse.Namespace) -> int:
    """The long-running cloud: the feed on stdout until Ctrl-C or SIGTERM."""
    try:
        _cloud, runner, header = _setup(args, lambda line: print(line, flush=True))
    except (KeyStoreError, LinkConfigError, OSError, ValueError) as err:
        return _fail(str(err))
    assert runner is not None
    print(header, file=sys.stderr if args.json else sys.stdout, flush=True)

    async def main() -> None:
        task = asyncio.create_task(runner.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0


def run_send(args: argparse.Namespace) -> int:
    """One command: publish it signed, wait for its command_result, print it; exit 0 only when ok."""
    try:
        body = json.loads(args.body)
    except ValueError as err:
        return _fail(f"the command's JSON is invalid: {err}")
    if not isinstance(body, dict):
        return _fail("the command's JSON must be an object")
    try:
        cloud, runner, _header = _setup(args, lambda line: print(line, file=sys.stderr, flush=True))
    except (KeyStoreError, LinkConfigError, OSError, ValueError) as err:
        return _fail(str(err))
    assert runner is not None
    runner.topics = (f"edge/{args.node}/up/event", f"edge/{args.node}/up/alert")
    cloud.feed.as_json = False

    async def main() -> dict[str, Any] | None:
        task = asyncio.create_task(runner.run())
        try:
            async with asyncio.timeout(args.timeout):
                await runner.connected.wait()
            return await cloud.send(args.node, args.type, body, timeout=args.timeout)
        except TimeoutError:
            return None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    result = asyncio.run(main())
    if result is None:
        if not runner.connected.is_set() and runner.last_error:
            why = f"no broker connection within {args.timeout:g}s ({runner.last_error})"
        else:
            why = (
                f"no command_result within {args.timeout:g}s (is the node online, and is "
                f"{state_dir(args) / JWK_FILE} in its uplink.cloud_keys?)"
            )
        print(f"edge-gateway dev-cloud: {why}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=None if args.json else 2, ensure_ascii=False))
    return 0 if result.get("ok") is True else 1
