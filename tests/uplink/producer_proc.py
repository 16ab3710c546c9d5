"""A producer process for the kill -9 tests: Outbox + Publisher + MqttLink, acks on stdout.

Prints `READY` once running, then `ACK <stream> <seq>` after each enqueue returned (so after
its commit). With --drain it enqueues nothing, waits until the outbox is empty and prints
`DRAINED`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
from pathlib import Path

import structlog

from gateway.uplink.envelope import Sealer
from gateway.uplink.keys import load_key
from gateway.uplink.mqtt import LinkSettings, MqttLink
from gateway.uplink.outbox import Outbox, OutboxConfig
from gateway.uplink.publisher import Publisher

STREAMS = ("tx", "audit", "alert", "event")


async def main(args: argparse.Namespace) -> int:
    sealer = Sealer(load_key(Path(args.key), args.node), args.node)
    config = OutboxConfig(batch_window_ms=2, inflight=args.inflight)
    async with Outbox(Path(args.db), sealer, config=config) as outbox:
        publisher = Publisher(outbox, args.node)
        link = MqttLink(
            LinkSettings(args.broker, backoff_min_s=0.05, backoff_max_s=0.2, keepalive_s=5),
            args.node,
            workers=[publisher.run],
        )
        async with link:
            print("READY", flush=True)
            if args.drain:
                await link.wait_connected(timeout=30)
                async with asyncio.timeout(60):
                    while outbox.backlog() or publisher.in_flight:
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.2)  # let the last deletes commit
                print("DRAINED", flush=True)
                return 0
            rng = random.Random(args.seed)

            async def produce(worker: int) -> None:
                i = 0
                while True:
                    stream = rng.choice(STREAMS)
                    result = await outbox.enqueue(stream, "reading", {"w": worker, "i": i, "seed": args.seed})
                    sys.stdout.write(f"ACK {result.stream} {result.seq}\n")
                    sys.stdout.flush()
                    i += 1
                    await asyncio.sleep(rng.random() * 0.003)

            await asyncio.gather(*(produce(w) for w in range(args.producers)))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=20)
    parser.add_argument("--drain", action="store_true")
    ns = parser.parse_args()
    # stdout carries the acknowledgements only.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    sys.exit(asyncio.run(main(ns)))
