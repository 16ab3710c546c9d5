"""Moved to gateway.uplink.outbox.incidents; this name stays until gateway/ops/diag.py imports it there."""

from gateway.uplink.outbox.incidents import (
    Incident,
    Kind,
    acknowledge,
    journal_path,
    load,
    open_incidents,
    save,
)

__all__ = ["Incident", "Kind", "acknowledge", "journal_path", "load", "open_incidents", "save"]
