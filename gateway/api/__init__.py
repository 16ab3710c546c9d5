"""The local HTTP API (aiohttp on a Unix socket): routes, problem+json errors, the OpenAPI document."""
