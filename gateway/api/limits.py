"""The API's connection limits from [api], resolved against the open-file limit."""

from __future__ import annotations

from gateway.api.listener import Limits, connection_cap, open_file_limit
from gateway.config import ApiConfig


def api_limits(api: ApiConfig, *, file_limit: int | None = None) -> Limits:
    """Resolve [api] against this process's open-file limit."""
    cap = connection_cap(api.max_connections, open_file_limit() if file_limit is None else file_limit)
    return Limits(
        max_connections=cap,
        reserved_connections=min(api.reserved_connections, cap // 2),
        header_timeout_s=api.header_timeout_s,
    )
