"""RFC 9457 problem details: one exception type for handlers, one function to render it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError

PROBLEM_TYPE_BASE = "https://edge-gateway.dev/problems/"
CONTENT_TYPE = "application/problem+json"


class Problem(GatewayError):
    """An error an API handler answers with; rendered as application/problem+json."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            data["detail"] = self.detail
        if instance:
            data["instance"] = instance
        data.update(self.extensions)
        return data

    def response(self, instance: str | None = None) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.body(instance), ensure_ascii=False).encode(),
            content_type=CONTENT_TYPE,
            headers=self.headers,
        )


def retry_after(seconds: float) -> dict[str, str]:
    """A Retry-After header in whole seconds (at least 1)."""
    return {"Retry-After": str(max(1, int(seconds + 0.999)))}


def from_http_exception(exc: web.HTTPException) -> Problem:
    """Map aiohttp's own HTTP errors (404, 405, 413, ...) to problems."""
    status = exc.status
    kinds = {
        400: ("bad-request", "Bad request"),
        401: ("unauthorized", "Unauthorized"),
        403: ("forbidden", "Forbidden"),
        404: ("not-found", "No such resource"),
        405: ("method-not-allowed", "Method not allowed"),
        413: ("body-too-large", "Request body too large"),
        415: ("unsupported-media-type", "Unsupported media type"),
    }
    kind, title = kinds.get(status, ("http-error", exc.reason or "HTTP error"))
    headers: dict[str, str] = {}
    if status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    detail = exc.text if exc.text and not exc.text.startswith(f"{status}:") else ""
    return Problem(status, kind, title, detail, headers=headers)
