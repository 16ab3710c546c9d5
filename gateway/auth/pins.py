"""Staff PINs: scrypt hashes encoded with their parameters, verified in constant time off the loop."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

# n=2^14, r=8 takes about 16 MiB and tens of milliseconds: costly to guess, cheap for one login.
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
DEFAULT_MIN_LENGTH = 6
_SALT_BYTES = 16
_HASH_BYTES = 32
_PREFIX = "scrypt"


class PinError(ValueError):
    """A PIN or PIN hash that cannot be used (too short, malformed encoding)."""


@dataclass(frozen=True, slots=True)
class PinHash:
    """A parsed `scrypt$n$r$p$salt_b64$hash_b64` string."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __repr__(self) -> str:
        return f"PinHash(n={self.n}, r={self.r}, p={self.p})"

    def encode(self) -> str:
        """The text form stored in config."""
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"{_PREFIX}${self.n}${self.r}${self.p}${salt}${digest}"


def _maxmem(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2) + 1024 * 1024


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p), dklen=dklen)


def parse_pin_hash(text: str) -> PinHash:
    """Parse and sanity-check an encoded PIN hash; raise PinError saying what is wrong."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        raise PinError("pin_hash must look like scrypt$n$r$p$salt_b64$hash_b64")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as err:
        raise PinError("pin_hash has a malformed number or base64 field") from err
    if n < 2**10 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise PinError("pin_hash scrypt parameters are out of range (n a power of 2 >= 1024)")
    if n > 2**20:
        raise PinError("pin_hash n is above 2^20 (would need more than 1 GiB)")
    if len(salt) < 8 or len(digest) < 16:
        raise PinError("pin_hash salt or digest is too short")
    return PinHash(n=n, r=r, p=p, salt=salt, digest=digest)


def hash_pin(
    pin: str,
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
    n: int = DEFAULT_N,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
) -> str:
    """Hash a new PIN for the config (`pin_hash`); ops call this through the CLI."""
    check_pin_format(pin, min_length=min_length)
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(pin, salt, n, r, p, _HASH_BYTES)
    encoded = PinHash(n=n, r=r, p=p, salt=salt, digest=digest).encode()
    parse_pin_hash(encoded)
    return encoded


def check_pin_format(pin: str, *, min_length: int = DEFAULT_MIN_LENGTH) -> None:
    """Reject PINs that are too short or contain whitespace/control characters."""
    if len(pin) < min_length:
        raise PinError(f"PIN must have at least {min_length} characters")
    if len(pin) > 128 or not pin.isprintable() or any(c.isspace() for c in pin):
        raise PinError("PIN must be at most 128 printable characters without spaces")


def verify_pin_sync(pin: str, encoded: PinHash | str) -> bool:
    """Whether `pin` matches the hash; the digest comparison is constant-time."""
    parsed = parse_pin_hash(encoded) if isinstance(encoded, str) else encoded
    candidate = _scrypt(pin, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.digest))
    return hmac.compare_digest(candidate, parsed.digest)


async def verify_pin(pin: str, encoded: PinHash | str) -> bool:
    """verify_pin_sync in a worker thread so scrypt's tens of milliseconds don't stall the loop."""
    return await asyncio.to_thread(verify_pin_sync, pin, encoded)
