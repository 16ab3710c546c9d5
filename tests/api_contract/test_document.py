"""The served OpenAPI document is the repo's file, is valid OpenAPI 3.1, and names exactly the routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web
from openapi_spec_validator import validate

from tests.support.daemon import REPO, inprocess_daemon

OPENAPI = REPO / "gateway" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in doc["paths"].items() for method in item if method in METHODS
    }


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route the router dispatches."""
    routes: set[tuple[str, str]] = set()
    gets = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None, route
        # aiohttp adds HEAD beside every GET (RFC 9110: same headers, no body); the document
        # describes the GET and says so in info.description.
        if route.method == "HEAD":
            assert ("GET", resource.canonical) in gets, resource.canonical
            continue
        routes.add((route.method, resource.canonical))
    return routes


def test_the_file_is_valid_openapi_3_1() -> None:
    doc = json.loads(OPENAPI.read_text())
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator: raises on any violation of the 3.1 schema or a broken $ref


async def test_served_document_is_the_file_and_routes_match(state_dir: Path) -> None:
    async with inprocess_daemon(state_dir) as gw, gw.client() as client:
        async with client.get("/v1/openapi.json") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            served = await resp.read()
        assert gw.daemon.server.app is not None
        routes = served_routes(gw.daemon.server.app)

    assert served == OPENAPI.read_bytes()
    doc = json.loads(served)
    validate(doc)
    paths = documented(doc)
    assert routes - paths == set(), f"routes the document does not describe: {sorted(routes - paths)}"
    assert paths - routes == set(), f"documented routes the gateway does not serve: {sorted(paths - routes)}"


def test_session_routes_require_the_bearer_token() -> None:
    doc = json.loads(OPENAPI.read_text())
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the session token from POST /v1/sessions",
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            secured = op.get("security") == [{"bearer": []}]
            assert secured == path.startswith("/v1/sessions/{session_id}"), (method, path)
            if secured:
                assert {"401", "404"} <= set(op["responses"]), (method, path)


def test_errors_are_problems_and_retry_after_is_declared() -> None:
    doc = json.loads(OPENAPI.read_text())
    shared = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            for status, response in op["responses"].items():
                response = shared[response["$ref"].rsplit("/", 1)[-1]] if "$ref" in response else response
                if int(status) >= 400 and not (path == "/v1/health" and status == "503"):
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)
                if status == "429" or (status == "503" and "SessionsFull" in json.dumps(response)):
                    assert "Retry-After" in response.get("headers", {}), (method, path, status)
