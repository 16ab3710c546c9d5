"""Operations: diag checks, health telemetry, device usage, alerts, Prometheus metrics, support bundles."""

from __future__ import annotations

import datetime as dt

# A clock before this date cannot be right: this code did not exist yet (the diag `clock` check).
BUILD_DATE = dt.date(2026, 11, 1)
