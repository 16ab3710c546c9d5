"""The development cloud's brain, independent of transport: verify, answer requests, sign commands.

What a real cloud must do with the gateway's messages, in one place: verify every uplink (see
`live.py`), deduplicate on (node, stream, seq), answer the node's signed requests
(`request.otp.challenge`, `request.otp.verify`, `request.face.compare` on the `tx` stream) with
a signed `reply` command, and send signed commands whose `command_result` comes back on `event`.
Transports (an MQTT broker in `broker.py`, the in-memory link in `simlink.py`) hand messages to
`on_message` and publish what `outgoing` yields.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from gateway.auth.simface import SIMULATION_LABEL, compare_request
from gateway.devcloud.feed import Feed, masked, summary
from gateway.devcloud.live import LiveVerifier, Verdict
from gateway.logs import mask_id
from gateway.uplink.envelope import GENESIS_PREV, EnvelopeError, Sealer, peek_envelope
from gateway.uplink.keys import (
    KeyMissingError,
    KeyRing,
    NodeKey,
    format_rfc3339,
    init_key,
    load_key,
)
from gateway.uplink.presence import PresenceError, PresenceTracker

log = structlog.get_logger(__name__)

CLOUD_ID = "devcloud"
KEY_FILE = "cloud.ed25519"
JWK_FILE = "cloud.jwk"
COMMAND_TTL = timedelta(minutes=5)
OTP_TTL_S = 300
OTP_MAX_TRIES = 5
RECENT = 2000


def load_cloud_key(state_dir: Path) -> NodeKey:
    """The cloud's signing key in `state_dir` (made on first use); its public JWK beside it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / KEY_FILE
    try:
        key = load_key(path, CLOUD_ID)
    except KeyMissingError:
        key = init_key(path, CLOUD_ID)
    jwk_path = state_dir / JWK_FILE
    text = json.dumps(key.public_jwk, indent=2) + "\n"
    if not jwk_path.exists() or jwk_path.read_text(encoding="utf-8") != text:
        jwk_path.write_text(text, encoding="utf-8")
    return key


@dataclass(frozen=True)
class Downlink:
    """A signed command ready to publish on `topic`."""

    node: str
    type: str
    id: str
    topic: str
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class Received:
    """One uplink as the cloud judged it."""

    topic: str
    raw: bytes = field(repr=False)
    verdict: Verdict

    @property
    def type(self) -> str | None:
        env = self.verdict.envelope
        return env.type if env is not None else None

    @property
    def body(self) -> Mapping[str, Any]:
        env = self.verdict.envelope
        return env.body if env is not None else {}


@dataclass
class _Challenge:
    node: str
    code: str
    expires: float
    tries: int = 0
    used: bool = False


class DevCloud:
    """Verifies uplinks live, answers OTP and face requests, signs commands and awaits their results."""

    def __init__(
        self,
        key: NodeKey,
        node_keys: KeyRing,
        feed: Feed,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.verifier = LiveVerifier(node_keys)
        self.feed = feed
        self._clock = clock
        self.outgoing: asyncio.Queue[Downlink] = asyncio.Queue()
        self.received: collections.deque[Received] = collections.deque(maxlen=RECENT)
        self.presence: dict[str, str] = {}
        self.presence_order = PresenceTracker()
        # (node, code) as the SMS gateway would have sent them, the latest few.
        self.sms: collections.deque[tuple[str, str]] = collections.deque(maxlen=100)
        self._sealers: dict[str, Sealer] = {}
        self._seq = int(clock() * 1000)
        self._challenges: dict[str, _Challenge] = {}
        self._results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Event()

    @property
    def public_jwk(self) -> dict[str, str]:
        """What a node lists in `uplink.cloud_keys`."""
        return self.key.public_jwk

    # ------------------------------------------------------------------ commands

    def command(
        self, node: str, type: str, body: Mapping[str, Any], *, ttl: timedelta = COMMAND_TTL
    ) -> Downlink:
        """A signed command for `node`, queued on `outgoing`."""
        sealer = self._sealers.get(node)
        if sealer is None:
            sealer = self._sealers[node] = Sealer(self.key, node)
        self._seq += 1
        command_id = f"dc-{secrets.token_hex(8)}"
        expiry = datetime.fromtimestamp(self._clock(), UTC) + ttl
        raw = sealer.seal(
            stream="down",
            seq=self._seq,
            prev=GENESIS_PREV,
            type=type,
            body=body,
            extra={"id": command_id, "exp": format_rfc3339(expiry)},
        )
        downlink = Downlink(node, type, command_id, f"edge/{node}/down/{type}", raw)
        self.outgoing.put_nowait(downlink)
        if type != "reply":
            self.feed.emit(
                "command",
                f"-> {node} command {type} id={command_id} {summary(body)}".rstrip(),
                node=node,
                type=type,
                id=command_id,
                body=masked(body),
            )
        return downlink

    def expect_result(self, command_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the `command_result` (or the node's `command_rejected` alert) of a command."""
        future = self._results.get(command_id)
        if future is None:
            future = self._results[command_id] = asyncio.get_running_loop().create_future()
        return future

    async def send(self, node: str, type: str, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        """Send a command and wait for its result; TimeoutError when none comes."""
        downlink = self.command(node, type, body)
        future = self.expect_result(downlink.id)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._results.pop(downlink.id, None)

    # ------------------------------------------------------------------ uplinks

    def on_message(self, topic: str, raw: bytes) -> None:
        """Everything the transport receives: `edge/+/status` and `edge/+/up/#`; never raises."""
        try:
            self._on_message(topic, raw)
        except Exception as err:
            # A bug here must not cost the node its link: the broker accepted the message anyway.
            log.exception("dev_cloud_message_failed", topic=topic)
            with contextlib.suppress(Exception):
                self.feed.emit("error", f"!! dev cloud failed on {topic}: {type(err).__name__}", topic=topic)

    def _on_presence(self, node: str, raw: bytes) -> None:
        """The consumer rule of docs/envelope.md: a stale presence (a late will) is ignored."""
        try:
            if not self.presence_order.apply(raw):
                return
            state = self.presence_order.state(node) or "?"
        except PresenceError:
            # Nodes before the JSON presence said plain `online` / `offline`.
            state = raw.decode() if raw in (b"online", b"offline") else "?"
            if state == "?":
                log.warning("dev_cloud_presence_unreadable", node=node[:64], size=len(raw))
        if self.presence.get(node) != state:
            self.presence[node] = state
            self.feed.emit("presence", f"   {node} is {state}", node=node, state=state)
        self._changed.set()

    def _on_message(self, topic: str, raw: bytes) -> None:
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == "edge" and parts[2] == "status":
            self._on_presence(parts[1], raw)
            return
        self.on_uplink(topic, raw)

    def on_uplink(self, topic: str, raw: bytes) -> Received:
        """Verify one uplink, show it, and act on it if it is trustworthy and new."""
        verdict = self.verifier.check(raw, topic=topic)
        item = Received(topic, raw, verdict)
        self.received.append(item)
        self._show(item)
        if verdict.envelope is not None and not verdict.duplicate and not verdict.problems:
            self._act(item)
        elif not verdict.duplicate:
            self._untrusted_result(item)
        self._changed.set()
        return item

    def _show(self, item: Received) -> None:
        verdict, env = item.verdict, item.verdict.envelope
        problems = [p.as_dict() for p in verdict.problems]
        if env is None:
            claimed = self.verifier.peek_type(item.raw)
            reasons = "; ".join(f"{p.kind}: {p.message}" for p in verdict.problems)
            self.feed.emit(
                "uplink",
                f"!! REFUSED on {item.topic} (claims {claimed or 'nothing readable'}): {reasons}",
                topic=item.topic,
                verified=False,
                claimed_type=claimed,
                problems=problems,
            )
            return
        mark = "ok" if verdict.verified else "!!"
        extra = " (duplicate, already handled)" if verdict.duplicate else ""
        if verdict.problems:
            extra += " " + "; ".join(f"{p.kind}: {p.message}" for p in verdict.problems)
        if verdict.learned_kid:
            extra += f" (now trusting {verdict.learned_kid})"
        body = masked(env.body)
        self.feed.emit(
            "uplink",
            f"{mark} {env.node} {env.stream}#{env.seq} {env.type} {summary(env.body)}{extra}".rstrip(),
            topic=item.topic,
            node=env.node,
            stream=env.stream,
            seq=env.seq,
            type=env.type,
            verified=verdict.verified,
            duplicate=verdict.duplicate,
            problems=problems,
            body=body,
        )

    def _act(self, item: Received) -> None:
        env = item.verdict.envelope
        assert env is not None
        if env.stream == "tx" and env.type.startswith("request."):
            self._answer(env.node, env.type.removeprefix("request."), env.body)
        elif env.stream == "event" and env.type == "command_result":
            self._resolve(env.body.get("id"), dict(env.body))
        elif env.stream == "alert" and env.type == "command_rejected":
            self._resolve(env.body.get("id"), {"ok": False, "rejected": env.body.get("kind"), **env.body})

    def _untrusted_result(self, item: Received) -> None:
        """A result that did not verify still ends the wait for it, as a failure that says why."""
        try:
            _kid, payload = peek_envelope(item.raw)
        except EnvelopeError:
            return
        body = payload.get("body")
        if payload.get("type") == "command_result" and isinstance(body, dict):
            reasons = "; ".join(f"{p.kind}: {p.message}" for p in item.verdict.problems)
            self._resolve(
                body.get("id"), {"id": body.get("id"), "ok": False, "error": f"NOT verified: {reasons}"}
            )

    def _resolve(self, command_id: object, result: dict[str, Any]) -> None:
        future = self._results.get(command_id) if isinstance(command_id, str) else None
        if future is not None and not future.done():
            future.set_result(result)

    # ------------------------------------------------------------------ requests

    def _answer(self, node: str, kind: str, body: Mapping[str, Any]) -> None:
        request_id = body.get("id")
        if not isinstance(request_id, str):
            return
        if kind == "otp.challenge":
            result = self._otp_challenge(node, body)
        elif kind == "otp.verify":
            result = self._otp_verify(node, body)
        elif kind == "face.compare":
            result = compare_request(body)
            if "error" in result:
                text = f"   face.compare from {node}: cannot compare ({result['error']}), {SIMULATION_LABEL}"
            else:
                verdict = "same person" if result["match"] else "DIFFERENT person"
                text = f"   face.compare from {node}: {verdict}, score {result['score']} ({SIMULATION_LABEL})"
            self.feed.emit("face", text, **{"node": node, "simulated": True, **result})
        else:
            result = {"error": f"unknown request {kind}"}
        self.command(node, "reply", {"id": request_id, "result": result})

    def _otp_challenge(self, node: str, body: Mapping[str, Any]) -> dict[str, Any]:
        digits = body.get("digits", 6)
        if isinstance(digits, bool) or not isinstance(digits, int) or not 6 <= digits <= 10:
            digits = 6
        now = self._clock()
        for stale in [k for k, c in self._challenges.items() if c.used or c.expires < now]:
            del self._challenges[stale]
        code = f"{secrets.randbelow(10**digits):0{digits}d}"
        challenge = f"otp-{secrets.token_hex(8)}"
        self._challenges[challenge] = _Challenge(node, code, self._clock() + OTP_TTL_S)
        self.sms.append((node, code))
        id_number = body.get("id_number")
        to = mask_id(id_number) if isinstance(id_number, str) else "the registered phone"
        self.feed.emit(
            "sms",
            f"   SMS to the phone of {to}: your code is {code} (valid {OTP_TTL_S // 60} min)",
            node=node,
            to=to,
            code=code,
            challenge=challenge,
        )
        return {"challenge": challenge, "expires_in_s": OTP_TTL_S}

    def _otp_verify(self, node: str, body: Mapping[str, Any]) -> dict[str, Any]:
        challenge = self._challenges.get(str(body.get("challenge")))
        code = body.get("code")
        if challenge is None or challenge.node != node or challenge.used or self._clock() > challenge.expires:
            return {"ok": False}
        challenge.tries += 1
        ok = isinstance(code, str) and hmac.compare_digest(code.encode(), challenge.code.encode())
        if ok or challenge.tries >= OTP_MAX_TRIES:
            challenge.used = True
        return {"ok": ok}

    # ------------------------------------------------------------------ for tests and tools

    async def wait_for(self, predicate: Callable[[Received], bool], *, timeout: float) -> Received:
        """The first received uplink (already here or arriving) that matches."""
        async with asyncio.timeout(timeout):
            while True:
                for item in list(self.received):
                    if predicate(item):
                        return item
                self._changed.clear()
                await self._changed.wait()
