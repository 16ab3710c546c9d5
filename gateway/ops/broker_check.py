"""The diag `broker` check, in its steps: DNS, TCP, TLS (chain and expiry), MQTT v5 connect.

Each step records what it saw under `data.steps` and either lets the next run or ends the check
with a failure that names the step and the fix.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiomqtt
from cryptography import x509

from gateway.config import GatewayConfig, UplinkConfig
from gateway.drivers_registry.probes import tcp_probe
from gateway.ops.checks import DEFAULT_TIMEOUT, CheckResult, Verdict
from gateway.simulation import SIM_BROKER
from gateway.uplink.mqtt import BrokerAddress, LinkConfigError, tls_context

CERT_WARN_DAYS: Final = 30


def _cert_summary(cert: x509.Certificate, now: dt.datetime) -> tuple[str, float]:
    days = (cert.not_valid_after_utc - now).total_seconds() / 86_400
    return cert.subject.rfc4514_string(), days


def _cert_files_verdict(
    files: Mapping[str, str], now: dt.datetime
) -> tuple[Verdict, list[str], list[dict[str, Any]], str | None]:
    """Expiry of our own certificate files (CA bundle, client certificate)."""
    verdict = Verdict.PASS
    notes: list[str] = []
    certs: list[dict[str, Any]] = []
    fix = None
    for role, name in files.items():
        if not name:
            continue
        try:
            loaded = x509.load_pem_x509_certificates(Path(name).read_bytes())
        except (OSError, ValueError) as err:
            return Verdict.FAIL, [f"cannot read {role} {name}: {err}"], certs, f"check uplink.{role}"
        for cert in loaded:
            subject, days = _cert_summary(cert, now)
            certs.append({"role": role, "subject": subject, "days_left": round(days, 1)})
            if days < 0:
                verdict = Verdict.FAIL
                notes.append(f"{role} {subject} expired {-days:.0f} days ago")
                fix = f"renew {name}"
            elif days < CERT_WARN_DAYS and verdict is not Verdict.FAIL:
                verdict = Verdict.WARN
                notes.append(f"{role} {subject} expires in {days:.0f} days")
                fix = f"renew {name} before it expires"
    return verdict, notes, certs, fix


@dataclass
class BrokerProbe:
    """One run of the broker check: where it goes, what each step saw, the verdict so far."""

    node: str
    uplink: UplinkConfig
    address: BrokerAddress
    timeout: float
    now: dt.datetime
    steps: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict = Verdict.PASS
    notes: list[str] = field(default_factory=list)
    fix: str | None = None
    tls: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        return f"{self.address.host}:{self.address.port}"

    def fail(self, detail: str, fix: str) -> CheckResult:
        return CheckResult("broker", Verdict.FAIL, detail, fix=fix, data={"steps": dict(self.steps)})

    def warn(self, note: str, fix: str | None) -> None:
        self.verdict, self.fix = Verdict.WARN, fix
        self.notes.append(note)

    def passed(self) -> CheckResult:
        scheme = "mqtts" if self.address.tls else "mqtt"
        detail = (
            f"{scheme}://{self.where}: DNS, TCP{', TLS' if self.address.tls else ''} and MQTT v5 connect ok"
        )
        if self.notes:
            detail += "; " + "; ".join(self.notes)
        return CheckResult("broker", self.verdict, detail, fix=self.fix, data={"steps": self.steps})


# A step ends the check with its failure, or returns None for the next step to run.
BrokerStep = Callable[[BrokerProbe], Awaitable[CheckResult | None]]


async def resolve(probe: BrokerProbe) -> CheckResult | None:
    """DNS: the broker's host name resolves."""
    host, port = probe.address.host, probe.address.port
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(probe.timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        probe.steps["dns"] = "timeout"
        return probe.fail(
            f"DNS lookup of {host} took over {probe.timeout:g} s", "check the resolver (`resolvectl status`)"
        )
    except OSError as err:
        probe.steps["dns"] = str(err)
        return probe.fail(
            f"cannot resolve {host}: {err}", "check the host name in uplink.broker and DNS on this box"
        )
    probe.steps["dns"] = sorted({str(info[4][0]) for info in infos})
    return None


async def connect(probe: BrokerProbe) -> CheckResult | None:
    """TCP: the broker's port accepts a connection."""
    why = await tcp_probe(probe.address.host, probe.address.port, timeout=probe.timeout)
    if why:
        probe.steps["tcp"] = why
        return probe.fail(
            f"TCP connect to {probe.where} failed: {why}",
            "is the broker running and reachable from this box? check uplink.broker, the broker's "
            "listener and any firewall on the way; messages wait in the outbox meanwhile",
        )
    probe.steps["tcp"] = "ok"
    return None


async def handshake(probe: BrokerProbe) -> CheckResult | None:
    """TLS (mqtts:// only): the broker's chain verifies; its and our certificates are not expiring."""
    if not probe.address.tls:
        return None
    uplink = probe.uplink
    try:
        probe.tls = tls_context(
            ca_file=uplink.ca_file, client_cert=uplink.client_cert, client_key=uplink.client_key
        )
    except LinkConfigError as err:
        probe.steps["tls"] = str(err)
        return probe.fail(str(err), "check uplink.ca_file, client_cert and client_key exist and are PEM")
    failed = await _peer_certificate(probe, probe.tls)
    if failed is not None:
        return failed
    own_verdict, own_notes, certs, own_fix = _cert_files_verdict(
        {"ca_file": uplink.ca_file, "client_cert": uplink.client_cert}, probe.now
    )
    probe.steps["certificates"] = certs
    probe.notes.extend(own_notes)
    if own_verdict is Verdict.FAIL:
        return probe.fail("; ".join(own_notes), own_fix or "renew the certificate")
    if own_verdict is Verdict.WARN:
        probe.verdict, probe.fix = Verdict.WARN, own_fix
    return None


async def _peer_certificate(probe: BrokerProbe, tls: ssl.SSLContext) -> CheckResult | None:
    """Handshake with the broker and judge its certificate's expiry."""
    host, port = probe.address.host, probe.address.port
    try:
        async with asyncio.timeout(probe.timeout):
            _reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host)
    except ssl.SSLCertVerificationError as err:
        probe.steps["tls"] = err.verify_message
        return probe.fail(
            f"TLS: the broker's certificate does not verify: {err.verify_message}",
            "the broker certificate must chain to uplink.ca_file and name the host in uplink.broker",
        )
    except (ssl.SSLError, OSError, TimeoutError) as err:
        probe.steps["tls"] = str(err) or type(err).__name__
        return probe.fail(
            f"TLS handshake with {probe.where} failed: {probe.steps['tls']}",
            "check the broker's TLS listener",
        )
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    version = ssl_object.version() if ssl_object is not None else None
    writer.close()
    try:
        async with asyncio.timeout(probe.timeout):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        pass
    if der:
        peer = x509.load_der_x509_certificate(der)
        subject, days = _cert_summary(peer, probe.now)
        probe.steps["tls"] = {"version": version, "subject": subject, "issuer": peer.issuer.rfc4514_string()}
        probe.steps["tls"]["days_left"] = round(days, 1)
        if days < CERT_WARN_DAYS:
            probe.warn(f"broker certificate expires in {days:.0f} days", "renew the broker's certificate")
    return None


async def mqtt_connect(probe: BrokerProbe) -> CheckResult | None:
    """MQTT: a v5 connect with the node's credentials is accepted."""
    # A distinct client id: reusing the node id would take over the running daemon's session.
    client = aiomqtt.Client(
        probe.address.host,
        probe.address.port,
        identifier=f"{probe.node}-diag-{os.getpid()}",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=probe.tls,
        timeout=probe.timeout,
        keepalive=max(5, int(probe.timeout * 2)),
    )
    started = time.monotonic()
    try:
        async with asyncio.timeout(probe.timeout + 1):
            async with client:
                pass
    except aiomqtt.MqttCodeError as err:
        probe.steps["mqtt"] = str(err)
        return probe.fail(
            f"MQTT connect to {probe.where} refused: {err}",
            "the broker refused the node's credentials: check client_cert is issued for this node and "
            "the broker's ACL admits it",
        )
    except (aiomqtt.MqttError, TimeoutError, OSError) as err:
        probe.steps["mqtt"] = str(err) or type(err).__name__
        return probe.fail(
            f"MQTT connect to {probe.where} failed: {probe.steps['mqtt']}",
            "check the broker's MQTT listener and logs",
        )
    probe.steps["mqtt"] = {"connect_s": round(time.monotonic() - started, 3)}
    return None


BROKER_STEPS: Final[tuple[BrokerStep, ...]] = (resolve, connect, handshake, mqtt_connect)


def _not_probed(uplink: UplinkConfig) -> CheckResult | None:
    """An empty broker (link off) or the in-process development cloud: nothing to connect to."""
    if not uplink.broker:
        commands = "" if uplink.cloud_keys else "; no uplink.cloud_keys, so cloud commands are refused"
        return CheckResult(
            "broker",
            Verdict.WARN,
            f"uplink.broker is empty: the MQTT link is off, messages wait in the outbox{commands}",
            fix="connect to the cloud: copy the broker CA, the node certificate and key (and the cloud's "
            "public JWK) to /etc/edge-gateway and set uplink.broker, ca_file, client_cert, client_key "
            "and cloud_keys (docs/install.md, 'Connect to the cloud')",
        )
    if uplink.broker == SIM_BROKER:
        return CheckResult(
            "broker", Verdict.SKIP, "uplink.broker is sim://cloud: the in-process development cloud"
        )
    return None


async def check_broker(
    config: GatewayConfig,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    now: dt.datetime | None = None,
) -> CheckResult:
    """DNS, TCP, TLS (chain and expiry) and an MQTT v5 connect with the node's credentials."""
    uplink = config.uplink
    skipped = _not_probed(uplink)
    if skipped is not None:
        return skipped
    try:
        address = BrokerAddress.parse(uplink.broker)
    except LinkConfigError as err:
        return CheckResult("broker", Verdict.FAIL, str(err), fix="correct uplink.broker")
    probe = BrokerProbe(config.node.id, uplink, address, timeout, now or dt.datetime.now(dt.UTC))
    probe.steps["broker"] = uplink.broker
    for step in BROKER_STEPS:
        failed = await step(probe)
        if failed is not None:
            return failed
    return probe.passed()
