"""Do at run time what edge-gateway's dependencies do, so a sandboxed run shows the unit fits.

Run by test_sandbox.py under sandbox_exec.py: each step uses a dependency the way the daemon
does (TLS to a broker, Ed25519 signing, SQLite outbox, aiohttp on a Unix socket, a serial line,
psutil telemetry, PC/SC bindings) and checks the result; prints one line per step and `ok`.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import sqlite3
import ssl
import sys
import tempfile
import tty
from pathlib import Path

import aiohttp
import aiomqtt
import msgspec
import prometheus_client
import psutil
import serial
import serial_asyncio_fast
import smartcard.scard
import structlog
import tenacity
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

TIMEOUT = 10.0


def step(name: str, detail: object) -> None:
    """Report a finished step."""
    print(f"{name}: {detail}", flush=True)


def ed25519_roundtrip() -> None:
    """Sign and verify as the uplink envelope does."""
    key = ed25519.Ed25519PrivateKey.generate()
    signature = key.sign(b"envelope")
    key.public_key().verify(signature, b"envelope")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    step("ed25519", f"{len(signature)} byte signature, {len(raw)} byte public key")


def tls_contexts(workdir: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed server certificate and matching client context, as for mqtts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def tls_echo(workdir: Path) -> None:
    """A TLS handshake and echo over loopback TCP, as the MQTT link makes to its broker."""
    server_ctx, client_ctx = tls_contexts(workdir)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server, asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "localhost", port, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(b"hello")
        answer = await reader.readexactly(5)
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        await writer.wait_closed()
    assert answer == b"hello", answer
    step("tls", version)


async def http_on_unix_socket(workdir: Path) -> None:
    """aiohttp serving and answering on a Unix socket, as the kiosk API does."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/v1/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    path = str(workdir / "api.sock")
    await web.UnixSite(runner, path).start()
    try:
        connector = aiohttp.UnixConnector(path=path)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(
                "http://localhost/v1/health", timeout=aiohttp.ClientTimeout(total=TIMEOUT)
            ) as response,
        ):
            body = await response.json()
    finally:
        await runner.cleanup()
    assert body == {"status": "ok"}, body
    step("http", body)


def sqlite_outbox(workdir: Path) -> None:
    """A WAL-mode SQLite database (mmap'd shared memory), as the outbox uses."""
    db = sqlite3.connect(workdir / "outbox.sqlite3")
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, body BLOB)")
        with db:
            db.executemany("INSERT INTO outbox (body) VALUES (?)", [(b"x" * 100,)] * 50)
        count = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        db.close()
    assert mode == "wal" and count == 50, (mode, count)
    step("sqlite", f"{mode}, {count} rows")


async def serial_line() -> None:
    """A serial port opened through pyserial-asyncio-fast on a pseudo-terminal."""
    controller, device = os.openpty()
    tty.setraw(controller)
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=os.ttyname(device), baudrate=115200
            )
            try:
                writer.write(b"\xaa\xaa\xaa\x96\x69")
                await writer.drain()
                loop = asyncio.get_running_loop()
                sent = await loop.run_in_executor(None, os.read, controller, 5)
                os.write(controller, b"\x90\x00")
                answer = await reader.readexactly(2)
            finally:
                writer.close()
    finally:
        os.close(device)
        os.close(controller)
    assert sent == b"\xaa\xaa\xaa\x96\x69" and answer == b"\x90\x00", (sent, answer)
    step("serial", f"pyserial {serial.VERSION}, {len(sent)} bytes out, {len(answer)} in")


def telemetry(workdir: Path) -> None:
    """psutil figures the ops telemetry reports."""
    psutil.cpu_percent(interval=None)
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(workdir))
    interfaces = psutil.net_if_addrs()
    me = psutil.Process()
    rss = me.memory_info().rss
    assert memory.total > 0 and disk.total > 0 and "lo" in interfaces and rss > 0
    step("psutil", f"boot {psutil.boot_time():.0f}, {len(interfaces)} interfaces, {me.num_fds()} fds")


def resolver() -> None:
    """Name resolution with AI_ADDRCONFIG, which asks the kernel over netlink."""
    infos = socket.getaddrinfo("localhost", 8883, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
    assert infos
    step("getaddrinfo", sorted({info[4][0] for info in infos}))


def encoders() -> None:
    """msgspec, structlog's JSON renderer, prometheus text, tenacity and aiomqtt objects."""
    blob = msgspec.json.encode({"seq": 1, "body": {"k": "v"}})
    assert msgspec.json.decode(blob) == {"seq": 1, "body": {"k": "v"}}
    line = structlog.processors.JSONRenderer()(None, "info", {"event": "card_read", "ms": 42})
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("frames", "frames read", registry=registry).inc()
    metrics = prometheus_client.generate_latest(registry)
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(2), reraise=True)
    assert retrying(lambda: 7) == 7
    will = aiomqtt.Will("edge/edge-001/status", b"offline", qos=1, retain=True)
    assert b"frames_total 1.0" in metrics and "card_read" in str(line) and will.retain
    step("encoders", f"{len(blob)} byte msgspec, {len(metrics)} byte metrics")


def pcsc_bindings() -> None:
    """pyscard's compiled PC/SC bindings load (pcscd itself is reached over its socket)."""
    step("pcsc", f"SCARD_PROTOCOL_T1={smartcard.scard.SCARD_PROTOCOL_T1}")


async def main() -> None:
    """Every step in turn; any failure raises and exits non-zero."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ed25519_roundtrip()
        await tls_echo(workdir)
        await http_on_unix_socket(workdir)
        sqlite_outbox(workdir)
        await serial_line()
        telemetry(workdir)
        resolver()
        encoders()
        pcsc_bindings()
    print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
