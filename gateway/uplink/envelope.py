"""The signed envelope: JWS JSON flattened serialization, Ed25519, a per-stream hash chain."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import GatewayError
from gateway.uplink.keys import (
    KeyRing,
    NodeKey,
    b64url_decode,
    b64url_encode,
    format_rfc3339,
    parse_rfc3339,
)

ALG: Final = "Ed25519"
TYP: Final = "edge-envelope+jws"
# `prev` of the first envelope of a stream: 32 zero bytes, base64url (same shape as a real digest).
GENESIS_PREV: Final = b64url_encode(bytes(32))
# Bigger than any legitimate message (an ID photo in a tx body is tens of kB), small enough to refuse floods.
MAX_ENVELOPE_BYTES: Final = 4 * 1024 * 1024
PAYLOAD_FIELDS: Final = frozenset({"node", "stream", "seq", "ts", "prev", "type", "body"})

_DIGEST_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_MEMBERS = frozenset({"payload", "protected", "signature"})


class EnvelopeError(GatewayError):
    """Root of envelope failures: the bytes are not an envelope we can trust."""

    def __init__(self, message: str, *, kid: str | None = None) -> None:
        super().__init__(message)
        self.kid = kid


class MalformedEnvelope(EnvelopeError):
    """Not a well-formed flattened JWS with a valid envelope payload; `field` names the part."""

    def __init__(self, message: str, *, field: str | None = None, kid: str | None = None) -> None:
        super().__init__(message, kid=kid)
        self.field = field


class WrongAlgorithm(EnvelopeError):
    """The protected header names an algorithm other than exactly `Ed25519`."""

    def __init__(self, alg: object, *, kid: str | None = None) -> None:
        super().__init__(f"algorithm {alg!r} is not accepted, only {ALG!r}", kid=kid)
        self.alg = alg


class UnknownKey(EnvelopeError):
    """The kid is not in the key ring."""

    def __init__(self, kid: str, message: str | None = None) -> None:
        super().__init__(message or f"unknown kid {kid}", kid=kid)


class KeyRetired(UnknownKey):
    """The kid is known but its validity ended before the time the envelope is checked at."""

    def __init__(self, kid: str, not_after: datetime, at: datetime) -> None:
        super().__init__(
            kid,
            f"kid {kid} was retired at {format_rfc3339(not_after)}, envelope checked at {format_rfc3339(at)}",
        )
        self.not_after = not_after
        self.at = at


class BadSignature(EnvelopeError):
    """The signature does not verify with the key its kid names."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"bad signature for kid {kid}", kid=kid)


# ---------------------------------------------------------------- low-level JWS (RFC 7515)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sign_flattened(protected: Mapping[str, Any], payload: bytes, key: Ed25519PrivateKey) -> dict[str, str]:
    """Sign `payload` under a protected header (compact sorted JSON): the flattened JWS members."""
    protected_b64 = b64url_encode(_json_bytes(protected))
    payload_b64 = b64url_encode(payload)
    signature = key.sign(f"{protected_b64}.{payload_b64}".encode("ascii"))
    return {"payload": payload_b64, "protected": protected_b64, "signature": b64url_encode(signature)}


def verify_signature(protected_b64: str, payload_b64: str, signature_b64: str, key: Ed25519PublicKey) -> bool:
    """Whether the Ed25519 signature over `protected.payload` (RFC 7515 signing input) is valid."""
    try:
        signature = b64url_decode(signature_b64)
        key.verify(signature, f"{protected_b64}.{payload_b64}".encode("ascii"))
    except (ValueError, InvalidSignature):
        return False
    return True


def to_compact(flattened: Mapping[str, str]) -> str:
    """The compact serialization `protected.payload.signature` of flattened members."""
    return f"{flattened['protected']}.{flattened['payload']}.{flattened['signature']}"


def envelope_digest(envelope: bytes) -> str:
    """base64url SHA-256 of an envelope's exact bytes: the next envelope's `prev`."""
    return b64url_encode(hashlib.sha256(envelope).digest())


def now_rfc3339() -> str:
    """The current time in the envelope's `ts` form."""
    return format_rfc3339(datetime.now(UTC))


# ---------------------------------------------------------------- sealing


class Sealer:
    """Builds and signs envelopes with one key; the encoded protected header is computed once."""

    def __init__(self, key: NodeKey, node_id: str, *, clock: Callable[[], str] = now_rfc3339) -> None:
        self.key = key
        self.node_id = node_id
        self._clock = clock
        self._sign = key.private_key.sign
        header = {"alg": ALG, "kid": key.kid, "typ": TYP}
        self._protected_b64 = b64url_encode(_json_bytes(header))
        self._prefix = self._protected_b64 + "."
        self._tail = '","protected":"' + self._protected_b64 + '","signature":"'

    @property
    def kid(self) -> str:
        """The kid every envelope of this sealer carries."""
        return self.key.kid

    def seal(
        self,
        *,
        stream: str,
        seq: int,
        prev: str,
        type: str,
        body: Mapping[str, Any],
        ts: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The envelope's final bytes: compact sorted JSON `{"payload","protected","signature"}`."""
        if not stream or not isinstance(stream, str):
            raise ValueError("stream must be a non-empty string")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"seq must be a non-negative int, got {seq!r}")
        if not isinstance(prev, str) or not _DIGEST_RE.match(prev):
            raise ValueError("prev must be a base64url SHA-256 digest (43 characters)")
        if not type or not isinstance(type, str):
            raise ValueError("type must be a non-empty string")
        payload: dict[str, Any] = {
            "node": self.node_id,
            "stream": stream,
            "seq": seq,
            "ts": ts if ts is not None else self._clock(),
            "prev": prev,
            "type": type,
            "body": body,
        }
        if extra:
            clash = PAYLOAD_FIELDS.intersection(extra)
            if clash:
                raise ValueError(f"extra may not override envelope fields: {sorted(clash)}")
            payload.update(extra)
        payload_b64 = b64url_encode(_json_bytes(payload))
        signature = self._sign((self._prefix + payload_b64).encode("ascii"))
        # Keys are already in sorted order and base64url needs no JSON escaping, so this is
        # byte for byte what json.dumps(sort_keys=True, separators=(",", ":")) would produce.
        return ('{"payload":"' + payload_b64 + self._tail + b64url_encode(signature) + '"}').encode("ascii")


# ---------------------------------------------------------------- opening


@dataclass(frozen=True)
class Envelope:
    """A verified envelope: its header, payload, exact bytes and signing kid."""

    header: Mapping[str, Any]
    payload: Mapping[str, Any] = field(repr=False)
    raw: bytes = field(repr=False)
    kid: str

    @property
    def node(self) -> str:
        """The sending node's id."""
        return str(self.payload["node"])

    @property
    def stream(self) -> str:
        """The stream (tx, audit, alert, telemetry, event, down)."""
        return str(self.payload["stream"])

    @property
    def seq(self) -> int:
        """The per-stream sequence number."""
        return int(self.payload["seq"])

    @property
    def ts(self) -> str:
        """The RFC 3339 timestamp as sent."""
        return str(self.payload["ts"])

    @property
    def timestamp(self) -> datetime:
        """The timestamp as an aware UTC datetime."""
        return parse_rfc3339(self.ts)

    @property
    def prev(self) -> str:
        """Digest of the previous envelope of the stream (GENESIS_PREV for the first)."""
        return str(self.payload["prev"])

    @property
    def type(self) -> str:
        """The message type (or command name on the down stream)."""
        return str(self.payload["type"])

    @property
    def body(self) -> Mapping[str, Any]:
        """The message body."""
        body: Mapping[str, Any] = self.payload["body"]
        return body

    @property
    def digest(self) -> str:
        """This envelope's digest, the `prev` of the next one in its stream."""
        return envelope_digest(self.raw)

    def __repr__(self) -> str:
        # The body may carry personal data (tx stream), so it never appears in a repr.
        return (
            f"Envelope(node={self.payload.get('node')!r}, stream={self.payload.get('stream')!r}, "
            f"seq={self.payload.get('seq')!r}, type={self.payload.get('type')!r}, kid={self.kid!r}, "
            f"bytes={len(self.raw)})"
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate member {key!r}")
        obj[key] = value
    return obj


def _strict_json(data: bytes | str, what: str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedEnvelope(f"{what} is not valid JSON: {err}", field=what) from err


@dataclass(frozen=True)
class _Parsed:
    """A flattened JWS split into parts, before any signature check."""

    protected_b64: str
    payload_b64: str
    signature_b64: str
    header: dict[str, Any]
    kid: str


def _parse(data: bytes) -> _Parsed:
    """Split and decode the JWS structure strictly; no key is involved yet."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise MalformedEnvelope(f"envelope is {len(data)} bytes, limit {MAX_ENVELOPE_BYTES}")
    outer = _strict_json(data, "envelope")
    if not isinstance(outer, dict):
        raise MalformedEnvelope("envelope is not a JSON object", field="envelope")
    if set(outer) != _MEMBERS:
        extra = sorted(set(outer) - _MEMBERS)
        missing = sorted(_MEMBERS - set(outer))
        raise MalformedEnvelope(
            f"envelope members must be exactly payload, protected, signature "
            f"(unexpected {extra}, missing {missing})",
            field="envelope",
        )
    for name in _MEMBERS:
        if not isinstance(outer[name], str):
            raise MalformedEnvelope(f"{name} is not a string", field=name)
    try:
        header_bytes = b64url_decode(outer["protected"])
    except ValueError as err:
        raise MalformedEnvelope(f"protected: {err}", field="protected") from err
    header = _strict_json(header_bytes, "protected")
    if not isinstance(header, dict):
        raise MalformedEnvelope("protected header is not a JSON object", field="protected")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedEnvelope("protected header has no kid", field="kid")
    if header.get("alg") != ALG:
        raise WrongAlgorithm(header.get("alg"), kid=kid)
    if "crit" in header:
        # We implement no JWS extension, so RFC 7515 §4.1.11 obliges us to refuse any critical one.
        raise MalformedEnvelope(f"unsupported crit {header['crit']!r}", field="crit", kid=kid)
    return _Parsed(outer["protected"], outer["payload"], outer["signature"], header, kid)


def _check_payload(payload: Any, kid: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise MalformedEnvelope("payload is not a JSON object", field="payload", kid=kid)
    missing = PAYLOAD_FIELDS - payload.keys()
    if missing:
        raise MalformedEnvelope(f"payload lacks {sorted(missing)}", field="payload", kid=kid)
    for name in ("node", "stream", "ts", "prev", "type"):
        if not isinstance(payload[name], str) or not payload[name]:
            raise MalformedEnvelope(f"payload {name} is not a non-empty string", field=name, kid=kid)
    seq = payload["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise MalformedEnvelope(f"payload seq {seq!r} is not a non-negative int", field="seq", kid=kid)
    if not _DIGEST_RE.match(payload["prev"]):
        raise MalformedEnvelope("payload prev is not a SHA-256 base64url digest", field="prev", kid=kid)
    if not isinstance(payload["body"], dict):
        raise MalformedEnvelope("payload body is not a JSON object", field="body", kid=kid)
    try:
        parse_rfc3339(payload["ts"])
    except ValueError as err:
        raise MalformedEnvelope(f"payload ts: {err}", field="ts", kid=kid) from err
    return payload


def _decode_payload(parsed: _Parsed) -> dict[str, Any]:
    try:
        payload_bytes = b64url_decode(parsed.payload_b64)
    except ValueError as err:
        raise MalformedEnvelope(f"payload: {err}", field="payload", kid=parsed.kid) from err
    return _check_payload(_strict_json(payload_bytes, "payload"), parsed.kid)


def peek_envelope(data: bytes | str) -> tuple[str, dict[str, Any]]:
    """The kid and payload WITHOUT checking the signature: only for routing, never for trust."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    parsed = _parse(raw)
    return parsed.kid, _decode_payload(parsed)


def open_envelope(data: bytes | str, keys: KeyRing, *, at: datetime | None = None) -> Envelope:
    """Parse strictly and verify an envelope; the kid must be valid at `at` (default: its own ts)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    parsed = _parse(raw)
    trusted = keys.get(parsed.kid)
    if trusted is None:
        raise UnknownKey(parsed.kid)
    if not verify_signature(
        parsed.protected_b64, parsed.payload_b64, parsed.signature_b64, trusted.public_key
    ):
        raise BadSignature(parsed.kid)
    payload = _decode_payload(parsed)
    when = at if at is not None else parse_rfc3339(payload["ts"])
    if trusted.not_after is not None and not trusted.valid_at(when):
        raise KeyRetired(parsed.kid, trusted.not_after, when)
    return Envelope(header=parsed.header, payload=payload, raw=raw, kid=parsed.kid)
