"""`edge-gateway support-bundle -o FILE`: recent logs, redacted config, diag, versions; no personal data.

The logs are masked when written; every text member is masked again while packing (ID numbers,
card numbers, personal keys in JSON log lines), so a line written before masking existed, or by
a tool that bypassed it, still leaves the box masked. The outbox is never included: it holds
transactions with personal data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import io
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from gateway import __version__
from gateway.config import GatewayConfig, load_config, redacted
from gateway.errors import ConfigError
from gateway.logs import PERSONAL_KEYS, mask_text, mask_value
from gateway.ops.diag import DiagReport, diagnose

# Newest log bytes taken across gateway.jsonl and its rotations.
DEFAULT_LOG_BYTES: Final = 16 << 20
ROTATIONS: Final = 3
SECRET_MARKERS: Final = ("password", "secret", "client_key", "pin_hash", "token")
# An integer this long could be a card number; gateway figures (bytes, counts) stay below it.
LONG_NUMBER: Final = 10**11


@dataclass
class BundleResult:
    """What went into a bundle."""

    path: Path
    members: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def scrub_data(value: Any, key: str | None = None, *, personal_keys: bool = True) -> Any:
    """Mask a JSON value: strings and keys by pattern, long integers, and (for log events) the
    values of personal keys. Numbers are not rewritten as text, so the JSON stays valid."""
    if isinstance(value, dict):
        return {
            mask_text(str(k)): scrub_data(v, str(k), personal_keys=personal_keys) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_data(v, personal_keys=personal_keys) for v in value]
    if personal_keys and key in PERSONAL_KEYS and value not in (None, ""):
        return mask_value(key, value)
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= LONG_NUMBER:
        return mask_text(str(value))
    return value


def scrub_log_line(line: str) -> str:
    """Re-mask one log line: a JSON event field by field, any other line as text."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            event = json.loads(stripped)
        except ValueError:
            event = None
        if isinstance(event, dict):
            return json.dumps(scrub_data(event), ensure_ascii=False)
    return mask_text(line.rstrip("\n"))


def scrub_log(text: str) -> str:
    return "".join(scrub_log_line(line) + "\n" for line in text.splitlines() if line.strip())


def log_files(config: GatewayConfig) -> list[Path]:
    """The daemon's JSON log and its rotations, newest first."""
    base = (
        Path(config.log.file).expanduser() if config.log.file else config.state_dir / "log" / "gateway.jsonl"
    )
    return [base, *(base.with_name(f"{base.name}.{n}") for n in range(1, ROTATIONS + 1))]


def read_tail(path: Path, limit: int) -> tuple[str, bool]:
    """The last `limit` bytes of a file, starting at a line boundary; (text, truncated)."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - limit)
        handle.seek(start)
        data = handle.read(limit)
    if start > 0:
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    return data.decode("utf-8", errors="replace"), start > 0


def redact_raw_config(text: str) -> str:
    """An unparsable config is still shown, with every secret-looking value blanked."""
    lines = []
    for line in text.splitlines():
        key, sep, _value = line.partition("=")
        if sep and any(marker in key.lower() for marker in SECRET_MARKERS):
            line = f'{key}= "<redacted>"'
        lines.append(line)
    return "\n".join(lines) + "\n"


def versions() -> dict[str, Any]:
    """Gateway, Python, OS and library versions."""
    try:
        os_release: dict[str, str] = platform.freedesktop_os_release()
    except OSError:
        os_release = {}
    libraries = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            libraries[str(name)] = dist.version
    return {
        "gateway": __version__,
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "os_release": {k: v for k, v in os_release.items() if k in ("NAME", "VERSION", "ID", "VERSION_ID")},
        "libraries": dict(sorted(libraries.items(), key=lambda kv: kv[0].lower())),
    }


def _json(data: Any) -> str:
    """A structured member, masked value by value (device `name`s are not personal here)."""
    masked = scrub_data(data, personal_keys=False)
    return json.dumps(masked, indent=2, ensure_ascii=False, default=str) + "\n"


async def build_bundle(
    config_path: str | None,
    output: Path,
    *,
    log_bytes: int = DEFAULT_LOG_BYTES,
    with_diag: bool = True,
) -> BundleResult:
    """Collect everything and write `output` (a tar.gz, mode 0600) atomically."""
    output = Path(output)
    created = dt.datetime.now(dt.UTC)
    members: dict[str, str] = {}
    notes: list[str] = []
    config = await _config_members(config_path, members, notes)
    if with_diag:
        report: DiagReport = await diagnose(config_path)
        members["diag.json"] = _json(report.as_dict())
        if report.status is not None:
            members["status.json"] = _json(msgspec.to_builtins(report.status))
    members["versions.json"] = _json(versions())
    if config is not None:
        await _log_members(config, log_bytes, members, notes)

    # The final pass over the plain-text members (JSON members and logs were masked field by field).
    final = {
        name: text if name.endswith(".json") or name.startswith("logs/") else mask_text(text)
        for name, text in members.items()
    }
    manifest = {
        "created": created.isoformat(),
        "node": config.node.id if config else None,
        "gateway": __version__,
        "members": sorted(final),
        "notes": notes,
    }
    final["MANIFEST.json"] = _json(manifest)
    prefix = f"edge-gateway-support-{manifest['node'] or 'unknown'}-{created:%Y%m%dT%H%M%SZ}"
    await asyncio.to_thread(_write_tar, output, prefix, final, created.timestamp())
    return BundleResult(output, [f"{prefix}/{name}" for name in sorted(final)], notes)


async def _config_members(
    config_path: str | None, members: dict[str, str], notes: list[str]
) -> GatewayConfig | None:
    """The config, redacted; a config that does not load goes in as its error and raw redacted text."""
    try:
        config = load_config(config_path)
    except ConfigError as err:
        notes.append(f"config invalid: {err}")
        members["config-error.txt"] = f"{err}\n"
        if config_path:
            try:
                raw = await asyncio.to_thread(Path(config_path).read_text, encoding="utf-8")
                members["config.toml.redacted"] = redact_raw_config(raw)
            except OSError as read_err:
                notes.append(f"cannot read {config_path}: {read_err.strerror}")
        return None
    members["config.json"] = _json({"source": config.source, "config": redacted(config)})
    return config


async def _log_members(config: GatewayConfig, budget: int, members: dict[str, str], notes: list[str]) -> None:
    """The newest log lines, masked, within `budget` bytes over all log files."""
    for path in log_files(config):
        if budget <= 0:
            break
        try:
            text, truncated = await asyncio.to_thread(read_tail, path, budget)
        except FileNotFoundError:
            continue
        except OSError as err:
            notes.append(f"cannot read {path}: {err.strerror}")
            continue
        budget -= len(text.encode("utf-8"))
        members[f"logs/{path.name}"] = scrub_log(text)
        if truncated:
            notes.append(f"{path.name}: only the newest part is included")


def _write_tar(output: Path, prefix: str, members: dict[str, str], mtime: float) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name in sorted(members):
                data = members[name].encode("utf-8")
                info = tarfile.TarInfo(f"{prefix}/{name}")
                info.size = len(data)
                info.mode = 0o600
                info.mtime = int(mtime)
                tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o600)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_bundle(config_path: str | None, output: Path) -> int:
    """`edge-gateway support-bundle -o FILE`: 0 written, 2 when the file cannot be written."""
    started = time.monotonic()
    try:
        result = asyncio.run(build_bundle(config_path, Path(output)))
    except OSError as err:
        print(f"edge-gateway support-bundle: cannot write {output}: {err.strerror or err}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {result.path} ({len(result.members)} files, {time.monotonic() - started:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gateway.ops.bundle` (the same as `edge-gateway support-bundle`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="edge-gateway support-bundle")
    parser.add_argument("-c", "--config", help="config file")
    parser.add_argument("-o", "--output", required=True, help="the tar.gz to write")
    args = parser.parse_args(argv)
    return make_bundle(args.config, Path(args.output))


if __name__ == "__main__":
    sys.exit(main())
