"""Fixtures for the ops tests: short state dirs (Unix socket paths), real mosquitto brokers."""

from __future__ import annotations
