"""Daemon start-up: process start to READY=1 on NOTIFY_SOCKET, and resident memory once ready.

Run: .venv/bin/python bench/startup.py [--runs 5] [--json]
Each run starts `python -m gateway run -c CFG` with a fresh state dir (first-boot: key, outbox and auth
stores are created) and both simulated peripherals on pseudo-terminals, times the READY=1 datagram,
reads the child's RSS (at READY and 1 s later; the larger counts) and stops it with SIGTERM.
Baselines in the same run: a bare `python -c "import aiohttp"` process, and `import gateway.daemon`
(imports alone), each timed to exit, and the RSS of the imports alone, to show where memory goes.
--without-rich hides rich (structlog.dev imports it when installed; only a test tool installs it
here) to give the figure of a production install. Targets: READY within 1.5 s, RSS under 60 MB (medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, NotifySocket, spawn_daemon, state_dir, stop, verdict, write_config

READY_TARGET_S = 1.5
RSS_TARGET_MB = 60.0
SETTLE_S = 1.0


def one_start(without: tuple[str, ...] = ()) -> tuple[float, float, int]:
    """Start the daemon once: (seconds to READY=1, RSS in MB, exit code after SIGTERM)."""
    with state_dir() as state:
        config = write_config(state)
        notify = NotifySocket(state / "notify.sock")
        try:
            started = time.monotonic()
            proc = spawn_daemon(config, env={"NOTIFY_SOCKET": str(notify.path)}, without=without)
            try:
                ready = notify.wait_ready(timeout=30) - started
                child = psutil.Process(proc.pid)
                rss = child.memory_info().rss
                time.sleep(SETTLE_S)
                rss = max(rss, child.memory_info().rss)
            finally:
                code = stop(proc)
        finally:
            notify.close()
        if code != 0:
            log = (state / "daemon.out").read_text(errors="replace")[-2000:]
            raise SystemExit(f"the daemon exited with {code}:\n{log}")
    return ready, rss / 1_048_576, code


def time_process(code: str) -> float:
    """Seconds from spawn to exit of `python -c CODE`."""
    started = time.monotonic()
    subprocess.run([PYTHON, "-c", code], cwd=REPO, check=True)
    return time.monotonic() - started


def imports_rss_mb(code: str) -> float:
    """RSS (MB) of a fresh interpreter after running `code` (imports only, no event loop)."""
    probe = f"{code}\nimport psutil\nprint(psutil.Process().memory_info().rss)"
    out = subprocess.run([PYTHON, "-c", probe], cwd=REPO, check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) / 1_048_576


IMPORT_PROBES = {
    "bare interpreter": "pass",
    "import aiohttp": "import aiohttp",
    "import gateway.daemon": "import gateway.daemon",
    # structlog.dev imports rich (and pygments) when installed; here only a test tool pulls it in.
    "import gateway.daemon without rich": "import sys\nsys.modules['rich'] = None\nimport gateway.daemon",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="daemon starts to time (default 5)")
    parser.add_argument("--without-rich", action="store_true", help="run the daemon with rich hidden")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    time_process("import aiohttp")  # warm the page cache and .pyc files for the baselines
    without = ("rich",) if args.without_rich else ()
    runs = [one_start(without) for _ in range(args.runs)]
    aiohttp_s = [time_process("import aiohttp") for _ in range(args.runs)]
    imports_s = [time_process("import gateway.daemon") for _ in range(args.runs)]

    import_rss = {name: imports_rss_mb(code) for name, code in IMPORT_PROBES.items()}

    ready = statistics.median(r[0] for r in runs)
    rss = statistics.median(r[1] for r in runs)
    baseline = statistics.median(aiohttp_s)
    imports = statistics.median(imports_s)
    for number, (ready_s, rss_run, _code) in enumerate(runs, 1):
        print(f"run {number}: READY=1 after {ready_s * 1000:7.1f} ms, RSS {rss_run:5.1f} MB")
    print(f"baseline `python -c 'import aiohttp'`: median {baseline * 1000:.1f} ms")
    print(f"imports only `python -c 'import gateway.daemon'`: median {imports * 1000:.1f} ms")
    print(f"READY=1 median {ready * 1000:.1f} ms = {ready / baseline:.2f}x the bare aiohttp process")
    print(
        f"RSS median {rss:.1f} MB; imports alone: "
        + ", ".join(f"{k} {v:.1f} MB" for k, v in import_rss.items())
    )
    ready_ok, rss_ok = ready <= READY_TARGET_S, rss < RSS_TARGET_MB
    print(f"{verdict(ready_ok)}: READY=1 within {READY_TARGET_S} s (median {ready:.3f} s)")
    print(f"{verdict(rss_ok)}: RSS under {RSS_TARGET_MB:.0f} MB (median {rss:.1f} MB)")
    if args.json:
        print(
            json.dumps(
                {
                    "runs": [{"ready_s": r[0], "rss_mb": r[1]} for r in runs],
                    "ready_median_s": ready,
                    "rss_median_mb": rss,
                    "baseline_import_aiohttp_s": baseline,
                    "imports_gateway_daemon_s": imports,
                    "ready_over_baseline": ready / baseline,
                    "imports_rss_mb": import_rss,
                    "pass": {"ready": ready_ok, "rss": rss_ok},
                }
            )
        )
    return 0 if ready_ok and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
