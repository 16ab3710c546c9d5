"""aiohttp's server logger for the API: a malformed request costs one rate-limited line, no traceback.

aiohttp logs every request it cannot parse at error level with a traceback, before any handler
(or peer check) runs: a peer sending junk could write kilobytes of log per request. Parse errors
(`HttpProcessingError`: bad request line, header too long, bad method) are counted here and the
first of each kind per interval is logged as one line; everything else goes to aiohttp's logger.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from gateway.ratelimit import Tally, echo

log = structlog.get_logger(__name__)


class QuietServerLogger:
    """Stands in for aiohttp's `aiohttp.server` logger (it calls only `debug` and `exception`)."""

    def __init__(self, *, interval_s: float = 60.0) -> None:
        self._log = logging.getLogger("aiohttp.server")
        self.tally = Tally(self._report, interval_s=interval_s)

    @property
    def malformed(self) -> int:
        return self.tally.total

    def debug(self, msg: str, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        if not self._parse_error(exc_info):
            self._log.debug(msg, *args, exc_info=exc_info, **kwargs)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if not self._parse_error(exc_info):
            self._log.exception(msg, *args, exc_info=exc_info, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def _parse_error(self, exc: Any) -> bool:
        if not isinstance(exc, HttpProcessingError):
            return False
        self.tally.record(type(exc).__name__, status=exc.code, message=echo(exc.message, 120))
        return True

    def _report(self, kind: str, count: int, fields: dict[str, Any], first: bool) -> None:
        if first:
            log.warning(
                "http_malformed_request",
                error=kind,
                status=fields.get("status"),
                detail=fields.get("message"),
            )
        else:
            log.warning(
                "http_malformed_request",
                error=kind,
                count=count,
                interval_s=self.tally.interval_s,
                detail="later malformed requests of this kind are counted, not logged",
            )
