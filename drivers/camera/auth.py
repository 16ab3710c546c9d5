"""HTTP authentication for IP cameras: every offered challenge read, the strongest one answered. Pure.

A 401 may carry several challenges, in several `WWW-Authenticate` headers or comma-separated in
one (RFC 7235 section 4.1); aiohttp's DigestAuthMiddleware reads only the first header, so a
camera that offers Basic first and Digest second is refused. Here Digest with SHA-256 ranks
above Digest with MD5, which ranks above Basic (as Chromium's HttpAuth::ChooseBestChallenge
scores them). Digest responses follow RFC 7616 section 3.4 (MD5, SHA-256 and their -sess
variants, qop "auth", or RFC 2069's form when no qop is offered); the test vectors are the
published examples of RFC 2617 section 3.5 and RFC 7616 section 3.9.1.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

AuthMode = Literal["auto", "digest", "basic"]

_DIGEST_ALGORITHMS = {
    "md5": "md5",
    "md5-sess": "md5",
    "sha-256": "sha256",
    "sha-256-sess": "sha256",
    "sha-512-256": "sha512_256",
    "sha-512-256-sess": "sha512_256",
}
_MAX_CHALLENGES = 16


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge: its scheme (lower case) and its parameters (names lower case)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return self.params.get("algorithm", "MD5").lower()

    @property
    def strength(self) -> int:
        """Higher is stronger; 0 means we cannot answer it."""
        if self.scheme == "basic":
            return 1
        if self.scheme != "digest" or "nonce" not in self.params or "realm" not in self.params:
            return 0
        if self.algorithm not in _DIGEST_ALGORITHMS:
            return 0
        qops = self.qops
        if qops and "auth" not in qops:
            return 0  # auth-int only: would need the body hash of every request
        return 3 if self.algorithm.startswith("sha") else 2

    @property
    def qops(self) -> list[str]:
        raw = self.params.get("qop")
        return [q.strip().lower() for q in raw.split(",") if q.strip()] if raw else []


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in ' \t,="':
        i += 1
    return text[start:i], i


def _quoted(text: str, i: int) -> tuple[str, int]:
    """A quoted-string starting at text[i] == '"'; backslash escapes the next character."""
    out = []
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    return "".join(out), i  # unterminated: take what there is


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Every challenge in the given WWW-Authenticate header values, in order; never raises."""
    found: list[Challenge] = []
    for value in values:
        i = 0
        current: Challenge | None = None
        while i < len(value) and len(found) < _MAX_CHALLENGES:
            i = _skip(value, i, " \t,")
            if i >= len(value):
                break
            name, j = _token(value, i)
            if not name:
                i += 1  # a stray '=' or '"': skip it
                continue
            k = _skip(value, j, " \t")
            if k < len(value) and value[k] == "=" and current is not None:
                k = _skip(value, k + 1, " \t")
                if k < len(value) and value[k] == '"':
                    param, i = _quoted(value, k)
                else:
                    param, i = _token(value, k)
                    # token68 (e.g. "Negotiate abc==") ends in '=' padding: keep scanning past it.
                    i = _skip(value, i, "=")
                current.params.setdefault(name.lower(), param)
                continue
            current = Challenge(name.lower())
            found.append(current)
            i = j
    return found


def choose(challenges: Iterable[Challenge], mode: AuthMode) -> Challenge | None:
    """The strongest challenge we can answer under `mode` ("digest" never picks Basic)."""
    usable = [c for c in challenges if c.strength > 0]
    if mode == "digest":
        usable = [c for c in usable if c.scheme == "digest"]
    elif mode == "basic":
        usable = [c for c in usable if c.scheme == "basic"]
    return max(usable, key=lambda c: c.strength, default=None)


def basic_authorization(username: str, password: str) -> str:
    """`Basic base64(user:pass)` (RFC 7617), UTF-8."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def digest_authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization header answering a Digest challenge (RFC 7616 section 3.4)."""
    algorithm = challenge.algorithm
    name = _DIGEST_ALGORITHMS.get(algorithm)
    if challenge.scheme != "digest" or name is None:
        raise ValueError(f"cannot answer {challenge.scheme} with algorithm {algorithm}")

    def h(text: str) -> str:
        return hashlib.new(name, text.encode(), usedforsecurity=False).hexdigest()

    realm, nonce = challenge.params["realm"], challenge.params["nonce"]
    cnonce = cnonce if cnonce is not None else os.urandom(16).hex()
    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.endswith("-sess"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    qop = "auth" if "auth" in challenge.qops else None
    count = f"{nc:08x}"
    # RFC 2069's form, without qop, for cameras that offer none.
    tail = f"{count}:{cnonce}:{qop}:{ha2}" if qop else ha2
    response = h(f"{ha1}:{nonce}:{tail}")
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
    ]
    if "algorithm" in challenge.params:
        parts.append(f"algorithm={challenge.params['algorithm']}")
    if "opaque" in challenge.params:
        parts.append(f"opaque={_quote(challenge.params['opaque'])}")
    if qop:
        parts += [f"qop={qop}", f"nc={count}", f"cnonce={_quote(cnonce)}"]
    return "Digest " + ", ".join(parts)
