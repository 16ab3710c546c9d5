"""Moves envelopes from the outbox to the broker: priority across streams, seq order within one.

One `run(channel)` per connection (a session worker of MqttLink). It keeps up to `inflight`
QoS 1 publishes outstanding, marks a message delivered only on its PUBACK, parks it as
rejected on a failure reason code (>= 0x80) and goes on. A new connection starts again from
each stream's oldest unacknowledged message, so order holds across reconnects and resends are
the stored bytes.

A PUBACK 0x10 "no matching subscribers" (MQTT v5.0 §3.4.2.1; mosquitto answers it to a v5
client when no subscription matches, see its handle_publish.c and its test
03-publish-qos1-no-subscribers-v5.py) means the broker dropped the message. For the classes in
`keep_on_no_subscribers` (tx and audit by default) the message stays queued: its stream pauses
and is sent again from that message after a jittered, growing wait, while the other streams go
on. Other classes count it and treat it as delivered. Each publish of a class with a TTL
carries the time it has left as its Message Expiry Interval (§3.3.2.3.3), so a broker never
hands stale telemetry to a consumer that comes back late.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import random
import time
from collections.abc import Iterable

import structlog

from gateway.status import PublisherStats
from gateway.uplink.mqtt import NO_MATCHING_SUBSCRIBERS, PUBACK_FAILURE, LinkDown, PublishChannel
from gateway.uplink.outbox import STREAMS, Outbox, OutboxError, Pending, StorageError

log = structlog.get_logger(__name__)

# How soon the publisher reads again after the outbox file could not be read.
_UNREADABLE_RETRY_S = 0.5


class Publisher:
    """Sends queued envelopes over whichever connection the link hands it."""

    def __init__(
        self,
        outbox: Outbox,
        node_id: str,
        *,
        inflight: int | None = None,
        publish_timeout_s: float | None = None,
        keep_on_no_subscribers: Iterable[str] = ("tx", "audit"),
        no_subscribers_retry_min_s: float = 1.0,
        no_subscribers_retry_max_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        window = outbox.config.inflight if inflight is None else inflight
        if not 1 <= window <= 100:
            raise ValueError(f"inflight must be 1..100, got {window}")
        self._window = window
        self._timeout = outbox.config.publish_timeout_s if publish_timeout_s is None else publish_timeout_s
        self._page = outbox.config.page_size
        self._topics = {s: f"edge/{node_id}/up/{s}" for s in STREAMS}
        self._keep = frozenset(keep_on_no_subscribers)
        unknown = sorted(self._keep - set(STREAMS))
        if unknown:
            raise ValueError(f"keep_on_no_subscribers names unknown classes: {unknown}")
        if not 0 < no_subscribers_retry_min_s <= no_subscribers_retry_max_s:
            raise ValueError("need 0 < no_subscribers_retry_min_s <= no_subscribers_retry_max_s")
        self._retry = (no_subscribers_retry_min_s, no_subscribers_retry_max_s)
        self._rng = rng or random.Random()
        # Per stream: 0x10 answers in a row (drives the retry wait).
        self._unheard: dict[str, int] = dict.fromkeys(STREAMS, 0)
        # Acknowledged rows whose delete has not committed yet: never resend those.
        self._acking: set[int] = set()
        # (generation, row id) published and waiting for their PUBACK: a rewound stream must not
        # send them twice. Row ids restart in a recovered database, hence the generation.
        self._sending: set[tuple[int, int]] = set()
        self._wake = asyncio.Event()
        self._dirty: set[str] = set(STREAMS)
        self.sent = 0
        self.delivered = 0
        self.rejected = 0
        self.in_flight = 0
        self.sessions = 0
        self.last_puback: float | None = None
        # PUBACK 0x10 answers per class (kept classes retry; the others count as delivered).
        self.no_subscribers: dict[str, int] = dict.fromkeys(STREAMS, 0)
        # Streams paused until a retry because nobody subscribed (monotonic deadline).
        self.held: dict[str, float] = {}

    def stats(self) -> PublisherStats:
        """Counters of this process (the outbox keeps the persisted ones)."""
        return PublisherStats(
            sent=self.sent,
            delivered=self.delivered,
            rejected=self.rejected,
            in_flight=self.in_flight,
            sessions=self.sessions,
            last_puback=self.last_puback,
            window=self._window,
            no_subscribers=sum(self.no_subscribers.values()),
            no_subscribers_by_class=dict(self.no_subscribers),
            held=sorted(self.held),
        )

    def _on_commit(self, streams: frozenset[str]) -> None:
        self._dirty.update(streams)
        self._wake.set()

    async def run(self, channel: PublishChannel) -> None:
        """Publish until cancelled or the connection fails (then raise LinkDown)."""
        self.sessions += 1
        self._outbox.add_listener(self._on_commit)
        session = _Session(self, channel)
        try:
            await session.run()
        finally:
            self._outbox.remove_listener(self._on_commit)
            await session.cancel_all()


class _Session:
    """The state of one connection: cursors, page buffers, in-flight publishes."""

    def __init__(self, publisher: Publisher, channel: PublishChannel) -> None:
        self.p = publisher
        self.channel = channel
        self.generation = publisher._outbox.generation
        self.cursor: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self.rewinds = dict(publisher._outbox.rewinds)
        self.buffers: dict[str, collections.deque[Pending]] = {s: collections.deque() for s in STREAMS}
        self.window = asyncio.Semaphore(publisher._window)
        self.tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        # Every stream may have something from an earlier session.
        publisher._dirty.update(STREAMS)

    async def run(self) -> None:
        p = self.p
        while True:
            await self.window.acquire()
            try:
                item = await self._next()
            except BaseException:
                self.window.release()
                raise
            self._check()
            p._sending.add((item.generation, item.id))
            task = asyncio.create_task(self._send(item))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            p.sent += 1

    def _check(self) -> None:
        if self.failure is not None:
            raise LinkDown(f"publishing failed: {self.failure}") from self.failure

    async def _next(self) -> Pending:
        """The next message by priority, waiting for new commits when everything is sent."""
        p = self.p
        while True:
            self._check()
            if p._outbox.generation != self.generation:
                self._reset()
            p._wake.clear()
            try:
                item = await self._take()
            except StorageError as err:
                # The file is unreadable for now (a damaged page: the writer checks and recovers
                # it). Keep the connection; try again shortly, from a new generation if it came.
                log.warning("uplink_outbox_unreadable", error=str(err))
                await asyncio.sleep(_UNREADABLE_RETRY_S)
                continue
            if item is not None:
                return item
            if not p.held:
                await p._wake.wait()
                continue
            # Wake up for new commits, or when the first held stream may try again.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(p.held.values()) - time.monotonic())):
                    await p._wake.wait()

    def _reset(self) -> None:
        """The outbox was replaced (corruption recovery): start over from its rows."""
        self.generation = self.p._outbox.generation
        self.cursor = dict.fromkeys(STREAMS, 0)
        for buffer in self.buffers.values():
            buffer.clear()
        self.p._acking.clear()
        self.p._dirty.update(STREAMS)

    async def _take(self) -> Pending | None:
        p = self.p
        now = p._outbox.clock()
        for stream in p._outbox.priority_order:
            if stream in p.held:
                if p.held[stream] > time.monotonic():
                    continue  # nobody subscribed a moment ago: wait, then resend from the first
                del p.held[stream]
            buffer = self.buffers[stream]
            rewinds = p._outbox.rewinds.get(stream, 0)
            if rewinds != self.rewinds.get(stream, 0):
                # Requeued rows sit behind the cursor: read the stream again from its start.
                self.rewinds[stream] = rewinds
                self.cursor[stream] = 0
                buffer.clear()
                p._dirty.add(stream)
            if not buffer and stream in p._dirty:
                p._dirty.discard(stream)
                try:
                    page = await p._outbox.read_page(stream, self.cursor[stream], p._page)
                except BaseException:
                    p._dirty.add(stream)  # still unread: the next try must read it
                    raise
                if len(page) == p._page:
                    p._dirty.add(stream)
                buffer.extend(page)
            while buffer:
                item = buffer.popleft()
                self.cursor[stream] = item.seq
                if item.id in p._acking or (item.generation, item.id) in p._sending:
                    continue
                if item.expires is not None and item.expires <= now:
                    # Dropped for good: after a clock step back it must not go out behind the
                    # higher seqs sent meanwhile (within a stream, seq order only).
                    with contextlib.suppress(OutboxError):
                        p._outbox.mark_expired(item)
                    continue
                return item
        return None

    async def _send(self, item: Pending) -> None:
        p = self.p
        p.in_flight += 1
        # The time left of a message that expires, as its MQTT Message Expiry Interval.
        expiry = None if item.expires is None else max(1, math.ceil(item.expires - time.time()))
        try:
            code = await self.channel.publish(
                p._topics[item.stream], item.envelope, timeout=p._timeout, expiry_s=expiry
            )
        except Exception as err:
            if self.failure is None:
                self.failure = err
            p._wake.set()
            return
        finally:
            p.in_flight -= 1
            p._sending.discard((item.generation, item.id))
            self.window.release()
        p.last_puback = time.time()
        if code == NO_MATCHING_SUBSCRIBERS:
            p.no_subscribers[item.stream] += 1
            if item.stream in p._keep:
                self._hold(item)
                return
        else:
            p._unheard[item.stream] = 0
        try:
            if code >= PUBACK_FAILURE:
                p.rejected += 1
                log.warning("uplink_rejected", stream=item.stream, seq=item.seq, reason=f"0x{code:02x}")
                fut = p._outbox.mark_rejected(item, code)
            else:
                p.delivered += 1
                fut = p._outbox.mark_delivered(item)
        except OutboxError as err:  # closed under us: the row stays and is resent later
            log.warning("uplink_ack_not_recorded", stream=item.stream, seq=item.seq, error=str(err))
            return
        p._acking.add(item.id)
        fut.add_done_callback(functools.partial(self._recorded, row=item.id))

    def _hold(self, item: Pending) -> None:
        """Nobody subscribes to this stream: keep the message, pause the stream, resend it later."""
        p = self.p
        stream = item.stream
        # Resend from this message on (rows still in flight or being deleted are skipped).
        self.cursor[stream] = min(self.cursor[stream], item.seq - 1)
        self.buffers[stream].clear()
        p._dirty.add(stream)
        p._wake.set()
        now = time.monotonic()
        if p.held.get(stream, 0.0) > now:
            return  # another message of the same round: the stream already waits
        # One more round nobody heard: the wait doubles (jittered), up to the maximum.
        p._unheard[stream] += 1
        low, high = p._retry
        wait = min(high, low * 2 ** min(p._unheard[stream] - 1, 30)) * p._rng.uniform(0.5, 1.0)
        p.held[stream] = now + wait
        log_at = log.warning if p._unheard[stream] == 1 else log.debug
        log_at("uplink_no_subscribers", stream=stream, seq=item.seq, kept=True, retry_in_s=round(wait, 2))

    def _recorded(self, fut: asyncio.Future[None], *, row: int) -> None:
        self.p._acking.discard(row)
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("uplink_ack_not_recorded", error=str(fut.exception()))

    async def cancel_all(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
