"""The durable outbox: every uplink message is sealed and committed to SQLite before anyone is told.

Where each part lives:

| module | what it does |
| --- | --- |
| config | the `[outbox]` table: streams, message classes (priority, lifetime, quota, when full) |
| errors | what callers get: OutboxFull (507), StorageError, StorageTimeout, UnknownStream, ... |
| records | Enqueued, Pending, OutboxAlert, Recovery: what goes in and out |
| service | the Outbox itself: the event loop's side (enqueue, acks, page reads, stats, alerts) |
| writer | the writer thread: group commit, the seq mark after each commit, full disk handling |
| jobs | what the writer does, each job applying itself to a transaction |
| store | the SQLite file: schema, connection settings, per-stream state and its snapshot |
| quotas | class and outbox byte quotas, and which oldest messages are dropped for room |
| reader | pages of queued rows for the publisher, never above the durable seq mark |
| recovery | a database behind its seq mark or corrupt: continue seq, salvage, record the incident |
| seqmark | the `<db>.seq` side file: the highest seq handed out, durable before it is used |
| salvage | every row that still reads back from a corrupt file |
| incidents | the journal of storage incidents, kept until ops acknowledge them |
| testing | test and benchmark variants (a disk that fills up, a slow disk); not for the daemon |
"""

from gateway.uplink.outbox.config import STREAMS, ClassConfig, OutboxConfig
from gateway.uplink.outbox.errors import (
    InvalidMessage,
    OutboxClosed,
    OutboxError,
    OutboxFull,
    StorageError,
    StorageTimeout,
    UnknownStream,
)
from gateway.uplink.outbox.records import Enqueued, OutboxAlert, Pending, Recovery, Seal
from gateway.uplink.outbox.service import Outbox

__all__ = [
    "STREAMS",
    "ClassConfig",
    "Enqueued",
    "InvalidMessage",
    "Outbox",
    "OutboxAlert",
    "OutboxClosed",
    "OutboxConfig",
    "OutboxError",
    "OutboxFull",
    "Pending",
    "Recovery",
    "Seal",
    "StorageError",
    "StorageTimeout",
    "UnknownStream",
]
