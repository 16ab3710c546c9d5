"""A hostile local client: holds many idle connections to a Unix socket, as another uid if asked.

Run as a separate process (`python -m tests.load.flood --socket PATH ...`): it raises its own
open-file limit while still root, drops to `--uid`, then keeps `--connections` connections open
for `--seconds`, sending nothing (or `--send` bytes, e.g. half a request head). A connection the
server closes is counted and, with `--reconnect`, replaced (at most `--rate` new ones a second).
It prints one JSON line of counts at the end.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import sys
import time
from collections import Counter


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def flood(
    path: str, connections: int, seconds: float, *, reconnect: bool, rate: float, send: bytes
) -> Counter[str]:
    """Hold up to `connections` idle connections for `seconds`; the counts of what happened."""
    stats: Counter[str] = Counter()
    sel = selectors.DefaultSelector()
    held: set[socket.socket] = set()
    started = time.monotonic()
    deadline = started + seconds
    budget = float(connections)
    last = started
    made_all = False
    while time.monotonic() < deadline:
        now = time.monotonic()
        budget = min(float(connections), budget + (now - last) * rate)
        last = now
        while len(held) < connections and budget >= 1 and not (made_all and not reconnect):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(path)
            except (BlockingIOError, InterruptedError):
                sock.close()
                stats["backlog_full"] += 1
                break
            except OSError as err:
                sock.close()
                stats[f"connect_{errno.errorcode.get(err.errno or 0, 'error')}"] += 1
                break
            budget -= 1
            if send:
                try:
                    sock.send(send)
                except OSError:
                    stats["send_failed"] += 1
            held.add(sock)
            sel.register(sock, selectors.EVENT_READ)
            stats["connected"] += 1
            if stats["connected"] >= connections:
                made_all = True
        stats["max_held"] = max(stats["max_held"], len(held))
        for key, _events in sel.select(timeout=0.05):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            try:
                data = ready.recv(65536)
            except OSError:
                data = b""
            if data:
                stats["answered"] += 1
                continue
            sel.unregister(ready)
            ready.close()
            held.discard(ready)
            stats["closed_by_server"] += 1
    stats["held_at_end"] = len(held)
    for sock in held:
        sock.close()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--reconnect", action="store_true")
    parser.add_argument("--rate", type=float, default=2000.0, help="new connections per second at most")
    parser.add_argument("--send", default="", help="bytes sent on each connection (\\r\\n escapes)")
    args = parser.parse_args(argv)
    want = args.connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    # Decoded while still root: after the drop this uid may not read the codec modules.
    send = args.send.encode().decode("unicode_escape").encode("latin-1")
    payload = json.dumps
    if args.uid is not None:
        _drop_to(args.uid)
    stats = flood(
        args.socket, args.connections, args.seconds, reconnect=args.reconnect, rate=args.rate, send=send
    )
    print(payload({"uid": os.getuid(), **stats}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
