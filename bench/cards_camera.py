"""Card and camera figures: social security read time through pcscd + vpcd, HTTP capture latency.

Run: `.venv/bin/python bench/cards_camera.py [--reads N] [--captures N]`. Starts pcscd if none
answers (and stops it again), uses the virtual card and the simulated camera on 127.0.0.1.
Baselines measured in the same run: a bare SCardTransmit round trip (per APDU) for the card,
a bare aiohttp GET of the same simulator without auth or checks for the camera.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from drivers.camera import HttpCamera, V4l2Camera
from drivers.camera.simulator import CameraSimulator
from drivers.cardreader import PcscCardReader
from drivers.cardreader.vcard import SocialSecurityApplet, VirtualCard
from tests.support.pcsc import VPCD_READER, PcscDaemon, wait_card_state


def summary(label: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[max(0, math.ceil(0.99 * len(ms)) - 1)]  # nearest rank: a measured sample
    return (
        f"{label:<44} n={len(ms):<4} median={statistics.median(ms):8.2f} ms  "
        f"p99={p99:8.2f} ms  max={ms[-1]:8.2f} ms"
    )


def raw_transmit_round_trips(count: int) -> list[float]:
    """Bare pyscard: connect once, time SCardTransmit of one SELECT EF05 per sample."""
    from smartcard import scard

    hr, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hr == scard.SCARD_S_SUCCESS
    try:
        hr, handle, protocol = scard.SCardConnect(
            context, VPCD_READER, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        assert hr == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hr)
        command = list(bytes.fromhex("00A4020002EF05"))
        samples = []
        for _ in range(count):
            t0 = time.perf_counter()
            hr, _response = scard.SCardTransmit(handle, protocol, command)
            samples.append(time.perf_counter() - t0)
            assert hr == scard.SCARD_S_SUCCESS
        scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
        return samples
    finally:
        scard.SCardReleaseContext(context)


async def bench_card(reads: int) -> None:
    daemon = PcscDaemon()
    await asyncio.to_thread(daemon.start)
    started_here = daemon.owned
    reader = PcscCardReader("cardreader", reader=VPCD_READER, poll_interval=0.3)
    card = VirtualCard(SocialSecurityApplet(), port=daemon.vpcd_port)
    try:
        await reader.start()
        await card.insert()
        await reader.read_social_security(timeout=10)  # warm-up: card seen, worker up
        before = len(card.commands)
        samples = []
        for _ in range(reads):
            t0 = time.perf_counter()
            await reader.read_social_security(timeout=10)
            samples.append(time.perf_counter() - t0)
        apdus = (len(card.commands) - before) / reads
        raw = await asyncio.to_thread(raw_transmit_round_trips, reads)
        print("== social security card through pcscd + vpcd ==")
        print(summary("read_social_security (EF05 + EF06)", samples))
        print(summary("baseline: bare SCardTransmit, 1 APDU", raw))
        per_apdu = statistics.median(samples) / apdus
        print(
            f"APDUs per read: {apdus:.0f}; driver time per APDU {per_apdu * 1000:.3f} ms = "
            f"{per_apdu / statistics.median(raw):.2f}x the bare round trip"
        )
    finally:
        await card.remove()
        await reader.close()
        await asyncio.to_thread(wait_card_state, False, timeout=5.0)
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
