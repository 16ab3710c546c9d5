"""System routes: health, status, the OpenAPI document."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from aiohttp import web

from gateway.api.app import CONTEXT, json_response

routes = web.RouteTableDef()

HEALTH_STATUS_CODE = {"ok": 200, "degraded": 200, "failing": 503}


@cache
def openapi_document() -> bytes:
    """The OpenAPI 3.1 document kept in the repo (gateway/openapi.json), validated as JSON once."""
    raw = resources.files("gateway").joinpath("openapi.json").read_bytes()
    json.loads(raw)
    return raw


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await ctx.health()
    return json_response(body, status=HEALTH_STATUS_CODE.get(body["status"], 200))


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    return json_response(await request.app[CONTEXT].status())


@routes.get("/v1/openapi.json")
async def openapi(_request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = await request.app[CONTEXT].metrics()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
