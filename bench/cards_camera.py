"""Card and camera figures: social security read time through pcscd + vpcd, HTTP capture latency.

Run: `.venv/bin/python bench/cards_camera.py [--reads N] [--captures N]`. Starts pcscd if none
answers (and stops it again), uses the virtual card and the simulated camera on 127.0.0.1.
Baselines measured in the same run: a bare SCardTransmit round trip (per APDU) for the card
(social security cards on T=1 and T=0 and one needing identifier addressing; bank cards found
through PPSE, PSE or AIDs are timed too),
a bare aiohttp GET of the same simulator without auth or checks for the camera.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from drivers.camera import HttpCamera, V4l2Camera
from drivers.camera.simulator import CameraSimulator
from drivers.cardreader import PcscCardReader
from drivers.cardreader.vcard import REORDERED_LAYOUT, BankApplet, SocialSecurityApplet, VirtualCard
from tests.support.pcsc import VPCD_READER, PcscDaemon, wait_card_state


def summary(label: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[max(0, math.ceil(0.99 * len(ms)) - 1)]  # nearest rank: a measured sample
    return (
        f"{label:<44} n={len(ms):<4} median={statistics.median(ms):8.2f} ms  "
        f"p99={p99:8.2f} ms  max={ms[-1]:8.2f} ms"
    )


# Bare round trip: select the application and EF05, then time READ RECORD position 1 with the exact
# Le (one APDU on T=0 and T=1 alike).
_RAW_SETUP = ("00A404000F7378312E73682EC9E7BBE1B1A3D5CF", "00A4020002EF05")
_RAW_TIMED = "00B2010412"


def raw_transmit_round_trips(count: int) -> list[float]:
    """Bare pyscard: connect once, time SCardTransmit of one READ RECORD per sample."""
    from smartcard import scard

    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hr == scard.SCARD_S_SUCCESS
    try:
        hr, handle, protocol = scard.SCardConnect(
            context, VPCD_READER, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        assert hr == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hr)
        for setup in _RAW_SETUP:
            hr, _response = scard.SCardTransmit(handle, protocol, list(bytes.fromhex(setup)))
            assert hr == scard.SCARD_S_SUCCESS
        command = list(bytes.fromhex(_RAW_TIMED))
        samples = []
        for _ in range(count):
            t0 = time.perf_counter()
            hr, response = scard.SCardTransmit(handle, protocol, command)
            samples.append(time.perf_counter() - t0)
            assert hr == scard.SCARD_S_SUCCESS and bytes(response[-2:]) == b"\x90\x00"
        scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
        return samples
    finally:
        scard.SCardReleaseContext(context)


# (label, applet factory): the spec layout on both protocols, and a card that needs the fallback.
_SS_CARDS: tuple[tuple[str, Callable[[], SocialSecurityApplet]], ...] = (
    ("T=1, read by position", lambda: SocialSecurityApplet(protocol="T=1")),
    ("T=0, by position, 61xx + 6Cxx", lambda: SocialSecurityApplet(protocol="T=0")),
    ("T=1, other EF06 order: identifier", lambda: SocialSecurityApplet(layout=REORDERED_LAYOUT)),
)


async def bench_card(reads: int) -> None:
    daemon = PcscDaemon()
    await asyncio.to_thread(daemon.start)
    started_here = daemon.owned
    reader = PcscCardReader("cardreader", reader=VPCD_READER, poll_interval=0.3)
    await reader.start()
    print("== social security card through pcscd + vpcd (EF05 items 01 03 05 06 07, EF06 08 09) ==")
    try:
        for label, make_applet in _SS_CARDS:
            card = VirtualCard(make_applet(), port=daemon.vpcd_port)
            await card.insert()
            try:
                for _ in range(5):  # warm-up: card seen, worker up, caches warm
                    await reader.read_social_security(timeout=10)
                before = len(card.apdus)
                samples = []
                for _ in range(reads):
                    t0 = time.perf_counter()
                    await reader.read_social_security(timeout=10)
                    samples.append(time.perf_counter() - t0)
                apdus = (len(card.apdus) - before) / reads
                raw = await asyncio.to_thread(raw_transmit_round_trips, reads)
            finally:
                await card.remove()
                await asyncio.to_thread(wait_card_state, False, timeout=5.0)
            per_apdu = statistics.median(samples) / apdus
            print(summary(f"read_social_security [{label}]", samples))
            print(summary("  baseline: bare SCardTransmit, 1 APDU", raw))
            print(
                f"  APDUs per read: {apdus:.0f}; driver time per APDU {per_apdu * 1000:.3f} ms = "
                f"{per_apdu / statistics.median(raw):.2f}x the bare round trip"
            )
        print("== bank card: finding the payment application (never the card number) ==")
        for label, applet in (
            ("contactless: PPSE", BankApplet()),
            ("contact, T=0: PPSE absent, PSE + records", BankApplet(interface="contact", protocol="T=0")),
            ("contact: no directory, UnionPay AIDs", BankApplet(interface="contact", pse=False)),
        ):
            card = VirtualCard(applet, port=daemon.vpcd_port)
            await card.insert()
            try:
                await reader.read_bank_card(timeout=10)
                before = len(card.apdus)
                samples = []
                for _ in range(reads):
                    t0 = time.perf_counter()
                    info = await reader.read_bank_card(timeout=10)
                    samples.append(time.perf_counter() - t0)
                apdus = (len(card.apdus) - before) / reads
            finally:
                await card.remove()
                await asyncio.to_thread(wait_card_state, False, timeout=5.0)
            print(summary(f"read_bank_card [{label}]", samples))
            print(f"  source={info.source}; APDUs per read: {apdus:.0f}")
    finally:
        await reader.close()
        if started_here:
            await asyncio.to_thread(daemon.stop)


async def bench_camera(captures: int) -> None:
    async with (
        CameraSimulator(username="bench", password="bench-pass") as auth_sim,
        CameraSimulator() as open_sim,
    ):
        camera = HttpCamera("camera", auth_sim.url, username="bench", password="bench-pass")
        await camera.start()
        try:
            await camera.capture()
            samples = []
            t_all = time.perf_counter()
            for _ in range(captures):
                t0 = time.perf_counter()
                await camera.capture()
                samples.append(time.perf_counter() - t0)
            sequential_fps = captures / (time.perf_counter() - t_all)

            t_all = time.perf_counter()
            in_flight = 4
            per_worker = captures // in_flight

            async def worker() -> None:
                for _ in range(per_worker):
                    await camera.capture()

            await asyncio.gather(*(worker() for _ in range(in_flight)))
            parallel_fps = per_worker * in_flight / (time.perf_counter() - t_all)
        finally:
            await camera.close()

        async with aiohttp.ClientSession() as session:
            baseline = []
            for _ in range(captures):
                t0 = time.perf_counter()
                async with session.get(open_sim.url) as response:
                    await response.read()
                baseline.append(time.perf_counter() - t0)
        frame_bytes = len(open_sim.frame(0))

    print(f"== camera over HTTP against the simulator ({frame_bytes} B frames, 320x240) ==")
    print(summary("HttpCamera.capture, digest auth", samples))
    print(summary("baseline: bare aiohttp GET, no auth/check", baseline))
    print(
        f"frames/s: sequential {sequential_fps:.0f}, 4 in flight {parallel_fps:.0f}; "
        f"capture median = {statistics.median(samples) / statistics.median(baseline):.2f}x baseline"
    )


async def bench_v4l2(captures: int) -> None:
    camera = V4l2Camera(
        "camera", ffmpeg_input=["-f", "lavfi", "-i", "testsrc=size=640x480:rate=5"], timeout=20
    )
    await camera.start()
    samples = []
    for _ in range(captures):
        t0 = time.perf_counter()
        await camera.capture()
        samples.append(time.perf_counter() - t0)
    await camera.close()
    print("== camera through ffmpeg (lavfi testsrc 640x480 in place of /dev/video0) ==")
    print(summary("V4l2Camera.capture (one ffmpeg run each)", samples))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--captures", type=int, default=400)
    parser.add_argument("--v4l2-captures", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(bench_card(args.reads))
    asyncio.run(bench_camera(args.captures))
    asyncio.run(bench_v4l2(args.v4l2_captures))


if __name__ == "__main__":
    main()
