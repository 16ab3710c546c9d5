"""Junk downlink messages of every kind an attacker who can publish to `edge/{node}/down/#` may send."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

from gateway.uplink.envelope import ALG
from gateway.uplink.keys import NodeKey
from tests.support.cloud import Cloud

HUGE_KID_CHARS = 150_000  # about 200 KB once encoded: under the size cap, so it is parsed
HUGE_TOPIC_CHARS = 60_000
OVERSIZE_BYTES = 300_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def huge_kid_envelope(chars: int = HUGE_KID_CHARS) -> bytes:
    """A well-formed JWS shape whose protected header carries a kid of `chars` characters."""
    header = _b64(json.dumps({"alg": ALG, "kid": "k" * chars}).encode())
    return json.dumps({"protected": header, "payload": _b64(b"{}"), "signature": _b64(bytes(64))}).encode()


def junk(cloud: Cloud, count: int) -> Iterator[tuple[str, bytes]]:
    """(topic suffix, payload) pairs cycling through the kinds of junk."""
    stranger = NodeKey(NodeKey.generate("x").private_key, cloud.key.kid)
    forged = cloud.command("ping", {}, key=stranger)[1]
    unknown = cloud.command("ping", {}, key=NodeKey.generate("cloud-2"))[1]
    huge_kid = huge_kid_envelope()
    oversize = os.urandom(OVERSIZE_BYTES)
    for index in range(count):
        kind = index % 7
        if kind == 0:
            yield "ping", os.urandom(200)
        elif kind == 1:
            yield "ping", json.dumps({"hello": "world", "n": index}).encode()
        elif kind == 2:
            yield "ping", forged
        elif kind == 3:
            yield "ping", unknown
        elif kind == 4:
            yield "ping", huge_kid
        elif kind == 5:
            yield "t" * HUGE_TOPIC_CHARS, json.dumps({"n": index}).encode()
        elif index % 70 == 6:  # oversize junk is rarer: it is costly for the broker too
            yield "config.set", oversize
        else:
            yield "config.set", os.urandom(64)
