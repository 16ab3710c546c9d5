"""`outbox.requeue` (and `POST` on the API): put messages the broker rejected back in the queue."""

from __future__ import annotations

from typing import Any

from gateway.uplink.outbox import STREAMS, Outbox


def requeue_target(body: Any) -> tuple[str | None, list[int] | None]:
    """The (stream, seqs) a requeue body names; ValueError says what is wrong with it."""
    if body is None:
        body = {}
    if not isinstance(body, dict) or set(body) - {"stream", "seqs"}:
        raise ValueError('outbox.requeue takes {"stream": NAME, "seqs": [SEQ, ...]}, both optional')
    stream, seqs = body.get("stream"), body.get("seqs")
    if stream is not None and stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; one of {', '.join(STREAMS)}")
    if seqs is not None and (
        not isinstance(seqs, list)
        or not 1 <= len(seqs) <= 10_000
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in seqs)
    ):
        raise ValueError("seqs must be a list of 1 to 10000 positive integers")
    return stream, seqs


async def requeue_rejected(outbox: Outbox, body: Any) -> dict[str, Any]:
    """`{"stream": "audit", "seqs": [4, 5]}` (both optional; seqs need the stream): requeue what the
    broker rejected. ValueError names what is wrong with the body."""
    stream, seqs = requeue_target(body)
    requeued = await outbox.requeue_rejected(stream, seqs)
    return {"requeued": requeued, "total": sum(requeued.values())}
