"""structlog set-up: JSON lines off a terminal, readable on one, personal data masked in every event.

Under systemd each line carries its level to the journal as a kernel-style `<N>` prefix (syslog
priority N), which journald strips and stores as the entry's PRIORITY; the JSON body is unchanged.
Sources: sd-daemon(3) (SD_ERR "<3>" ... SD_DEBUG "<7>" for lines on stdout/stderr) and
systemd.exec(5) (SyslogLevelPrefix=, on by default; JOURNAL_STREAM= holds "DEVICE:INODE" of the
stream connected to the journal, which a process compares with fstat() of its own stdout/stderr,
as the Rust crate systemd-journal-logger's connected_to_journal() also does).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

# An 18-character resident ID number: 17 digits and a check character.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{3})(\d{11})(\d{3}[\dXx])(?![0-9A-Za-z])")
# Card numbers (bank PAN, social security card numbers): long digit runs.
_LONG_DIGITS = re.compile(r"(?<![0-9])(\d{3})(\d{5,})(\d{4})(?![0-9])")

# Keys whose values are personal whatever they look like.
PERSONAL_KEYS = frozenset(
    {
        "name",
        "id_number",
        "address",
        "birth_date",
        "photo",
        "fingerprint",
        "card_number",
        "pan",
        "phone",
        "holder",
        "nation",
    }
)


def mask_id(value: str) -> str:
    """Keep the first 3 and last 4 characters of an identifier, star the rest."""
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_text(text: str) -> str:
    """Mask every ID number or long card number found inside free text."""
    text = _ID_NUMBER.sub(lambda m: m.group(1) + "*" * 11 + m.group(3)[-4:], text)
    return _LONG_DIGITS.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


def mask_value(key: str | None, value: Any) -> Any:
    """Mask one value; personal keys are masked whatever their content."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if key in PERSONAL_KEYS and value not in (None, ""):
        return mask_id(str(value)) if key in ("id_number", "card_number", "pan") else "<masked>"
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(k if isinstance(k, str) else None, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(None, v) for v in value]
    return value


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no log event leaves with an unmasked ID number, name or card number."""
    for key in list(event_dict):
        event_dict[key] = mask_value(key, event_dict[key])
    return event_dict


# syslog(3) priorities by Python level: LOG_CRIT 2, LOG_ERR 3, LOG_WARNING 4, LOG_INFO 6, LOG_DEBUG 7.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald should record for a Python log level."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7


def connected_to_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journal stream systemd announced in JOURNAL_STREAM (device:inode)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class JournalPrefixFormatter(structlog.stdlib.ProcessorFormatter):
    """A ProcessorFormatter whose every line starts with the record's `<N>` syslog priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        # journald reads the prefix per line: a multi-line record (console format) keeps its level.
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


# Run on every event before it is rendered (ours and the standard library's).
_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]
# Run last, before the renderer: personal data is masked whatever the output.
_FINAL_CHAIN: list[Any] = [
    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
    structlog.processors.format_exc_info,
    mask_personal_data,
]


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    file: Path | None = None,
    stream: TextIO | None = None,
    journal: bool | None = None,
) -> None:
    """Send all logs (ours and libraries') through structlog's processors, masking first.

    `journal` (default: whether `stream` is systemd's journal stream) prefixes each line with its
    syslog priority so `journalctl -p warning` finds warnings and errors.
    """
    stream = stream or sys.stderr
    if journal is None:
        journal = connected_to_journal(stream)
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_PRE_CHAIN,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(stream)
    formatter = JournalPrefixFormatter if journal else structlog.stdlib.ProcessorFormatter
    console.setFormatter(formatter(processors=[*_FINAL_CHAIN, renderer], foreign_pre_chain=_PRE_CHAIN))
    root.addHandler(console)
    if file is not None:
        root.addHandler(_file_handler(file))
    set_level(level)


def _file_handler(file: Path) -> logging.Handler:
    """The rotating JSON log kept for support bundles (already masked)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    rotating = logging.handlers.RotatingFileHandler(file, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
    rotating.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[*_FINAL_CHAIN, structlog.processors.JSONRenderer(ensure_ascii=False)],
            foreign_pre_chain=_PRE_CHAIN,
        )
    )
    return rotating


def set_level(level: str) -> None:
    """Change the level live (SIGHUP reload)."""
    numeric = logging.getLevelName(level.upper())
    logging.getLogger().setLevel(numeric)
    # aiohttp's access log is per request: keep it at warning unless debugging.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
    )
