"""A local stand-in for the vendor face-compare service, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

RESPONSES: dict[str, Any] = {
    "match": {"score": 0.93, "liveness": True},
    "low": {"score": 0.41, "liveness": True},
    "spoof": {"score": 0.97, "liveness": False},
    "wrong_types": {"score": "high", "liveness": "yes"},
    "out_of_range": {"score": 7, "liveness": True},
    "missing": {"similarity": 0.9},
}


@dataclass
class FaceService:
    """Answers POST /compare the way the documented vendor API does; `mode` picks the verdict."""

    mode: str = "match"
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def compare(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            probe = base64.b64decode(body["probe"], validate=True)
            reference = base64.b64decode(body["reference"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return web.json_response({"error": "bad request"}, status=400)
        if not probe.startswith(b"\xff\xd8") or body.get("reference_format") != "wlt":
            return web.json_response({"error": "bad images"}, status=400)
        self.requests.append({**body, "probe": probe, "reference": reference})
        if self.mode == "slow":
            # Hold the answer until the test ends, far past the client's timeout.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.release.wait()
            return web.json_response(RESPONSES["match"])
        if self.mode == "garbage":
            return web.Response(text="<html>upstream exploded</html>", content_type="text/html")
        if self.mode == "error":
            return web.json_response({"error": "engine down"}, status=500)
        if self.mode == "huge":
            return web.Response(text=json.dumps({"pad": "x" * 200_000, **RESPONSES["match"]}))
        return web.json_response(RESPONSES[self.mode])
