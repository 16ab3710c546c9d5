"""Node signing keys on disk, their JWK form and kid, rotation, and the verification key ring."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import GatewayError

log = structlog.get_logger(__name__)

PREV_SUFFIX = ".prev"
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


class KeyStoreError(GatewayError):
    """Root of the key errors: a key file is missing, unsafe, unreadable, or a JWK is invalid."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class KeyMissingError(KeyStoreError):
    """There is no key file where the config says; `edge-gateway keys init` creates one."""


class KeyExistsError(KeyStoreError):
    """`init_key` refuses to overwrite a key; rotation is the way to replace one."""


class KeyPermissionError(KeyStoreError):
    """The key file is open to group or others, so it may have leaked and is refused."""


class KeyFormatError(KeyStoreError):
    """A key file or JWK is not a usable Ed25519 key."""


# ---------------------------------------------------------------- encodings shared by the package


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Strict base64url without padding: rejects padding, foreign characters and non-canonical tails."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as err:
            raise ValueError("base64url text is not ASCII") from err
    if not _B64URL_RE.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as err:
        raise ValueError(f"not base64url: {err}") from err
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url (stray bits in the last character)")
    return data


def format_rfc3339(when: datetime) -> str:
    """RFC 3339 UTC with milliseconds and `Z`, the one form the gateway writes."""
    if when.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> datetime:
    """Any RFC 3339 date-time (with offset) as an aware UTC datetime; ValueError otherwise."""
    match = _RFC3339_RE.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    # A leap second (:60) has no datetime representation; the instant before it is close enough.
    second = min(second, 59)
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    if offset in ("Z", "z"):
        tz_delta = timedelta(0)
    else:
        sign = 1 if offset[0] == "+" else -1
        tz_delta = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    naive = datetime(year, month, day, hour, minute, second, micro)
    return (naive - tz_delta).replace(tzinfo=UTC)


# ---------------------------------------------------------------- JWK, thumbprint, kid


def public_key_x(public_key: Ed25519PublicKey) -> str:
    """The JWK `x` member: the raw 32-byte public key, base64url."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64url_encode(raw)


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256) of an OKP JWK: hash of its required members in lexical order."""
    required = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def node_kid(node_id: str, public_key: Ed25519PublicKey) -> str:
    """The kid of a node key: `<node id>:<RFC 7638 thumbprint>`."""
    thumb = jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": public_key_x(public_key)})
    return f"{node_id}:{thumb}"


def public_key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """The Ed25519 public key of a JWK, refusing anything that is not a public Ed25519 signing key."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise KeyFormatError(f"JWK is not an Ed25519 key (kty={jwk.get('kty')!r}, crv={jwk.get('crv')!r})")
    if "d" in jwk:
        raise KeyFormatError("JWK holds a private key; only public keys belong in a key ring")
    if jwk.get("use", "sig") != "sig":
        raise KeyFormatError(f"JWK use is {jwk.get('use')!r}, not 'sig'")
    if jwk.get("alg", "Ed25519") not in ("Ed25519", "EdDSA"):
        raise KeyFormatError(f"JWK alg is {jwk.get('alg')!r}, not Ed25519")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise KeyFormatError("JWK has no string 'x' member")
    try:
        raw = b64url_decode(x)
    except ValueError as err:
        raise KeyFormatError(f"JWK 'x' is not base64url: {err}") from err
    if len(raw) != 32:
        raise KeyFormatError(f"JWK 'x' is {len(raw)} bytes, an Ed25519 key is 32")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class NodeKey:
    """An Ed25519 private key and the kid its signatures carry (a node key or a cloud key)."""

    private_key: Ed25519PrivateKey = field(repr=False)
    kid: str

    @classmethod
    def for_node(cls, private_key: Ed25519PrivateKey, node_id: str) -> NodeKey:
        """A node's key with the kid `<node id>:<thumbprint>`."""
        return cls(private_key, node_kid(node_id, private_key.public_key()))

    @classmethod
    def generate(cls, node_id: str) -> NodeKey:
        """A fresh node key (not stored anywhere)."""
        return cls.for_node(Ed25519PrivateKey.generate(), node_id)

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        return self.private_key.public_key()

    @property
    def thumbprint(self) -> str:
        """RFC 7638 thumbprint of the public JWK."""
        return jwk_thumbprint(self.public_jwk)

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public JWK `{"kty","crv","x","kid"}` that `keys show --public` prints."""
        return {"kty": "OKP", "crv": "Ed25519", "x": public_key_x(self.public_key), "kid": self.kid}


# ---------------------------------------------------------------- key files


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write a 0600 file atomically: a temp file beside it, fsync, then link (no clobber) or replace."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            # link() fails if the target exists, so two concurrent inits cannot both win.
            try:
                os.link(tmp, path)
            except FileExistsError as err:
                raise KeyExistsError(
                    f"refusing to overwrite the existing key {path}; "
                    "use `edge-gateway keys rotate` to replace it",
                    path=path,
                ) from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _ensure_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)


def _read_private(path: Path) -> bytes:
    """Read a key file after checking, on the open descriptor, that only its owner can use it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as err:
        raise KeyMissingError(
            f"no signing key at {path}; create one with `edge-gateway keys init`", path=path
        ) from err
    except OSError as err:
        raise KeyStoreError(f"cannot open key file {path}: {err.strerror}", path=path) from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFormatError(f"key file {path} is not a regular file", path=path)
        if st.st_mode & 0o077:
            raise KeyPermissionError(
                f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group/others may use it; "
                f"fix with `chmod 600 {path}`",
                path=path,
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse_private_pem(data: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise KeyFormatError(f"key file {path} is not an unencrypted PEM key: {err}", path=path) from err
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"key file {path} holds a {type(key).__name__}, not Ed25519", path=path)
    return key


def init_key(path: Path, node_id: str) -> NodeKey:
    """Create the node's signing key (PEM PKCS#8, mode 0600); never overwrites an existing one."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise KeyExistsError(
            f"refusing to overwrite the existing key {path}; use `edge-gateway keys rotate` to replace it",
            path=path,
        )
    _ensure_dir(path.parent)
    key = NodeKey.generate(node_id)
    _write_private(path, _pem(key.private_key), replace=False)
    log.info("node_key_created", path=str(path), kid=key.kid)
    return key


def load_key(path: Path, node_id: str) -> NodeKey:
    """Load the node's signing key, refusing a file that group or others can read or write."""
    path = Path(path)
    return NodeKey.for_node(_parse_private_pem(_read_private(path), path), node_id)


@dataclass(frozen=True)
class RetiredKey:
    """The previous node key, kept after a rotation until `not_after`."""

    key: NodeKey
    not_after: datetime


@dataclass(frozen=True)
class Rotation:
    """The outcome of a rotation: announce `new` in a `key_rotated` message sealed by `old`."""

    old: NodeKey
    new: NodeKey
    old_not_after: datetime

    def announcement_body(self) -> dict[str, Any]:
        """The body of the `key_rotated` message (seal it with `Sealer(rotation.old, node_id)`)."""
        return {
            "new_jwk": self.new.public_jwk,
            "old_kid": self.old.kid,
            "old_not_after": format_rfc3339(self.old_not_after),
        }


def previous_key_path(path: Path) -> Path:
    """Where a rotation keeps the old key: `<path>.prev`."""
    path = Path(path)
    return path.with_name(path.name + PREV_SUFFIX)


def rotate_key(path: Path, node_id: str, *, overlap_s: float, now: datetime | None = None) -> Rotation:
    """Replace the node key with a new one, keeping the old one in `<path>.prev` until the overlap ends."""
    path = Path(path)
    if overlap_s < 0:
        raise ValueError("overlap_s must be >= 0")
    old = load_key(path, node_id)
    new = NodeKey.generate(node_id)
    not_after = (now or datetime.now(UTC)) + timedelta(seconds=overlap_s)
    prev_doc = {
        "kid": old.kid,
        "not_after": format_rfc3339(not_after),
        "private_key_pem": _pem(old.private_key).decode("ascii"),
    }
    # Old key first: a crash between the two writes leaves the old key current, never a lost key.
    _write_private(previous_key_path(path), json.dumps(prev_doc, indent=1).encode(), replace=True)
    _write_private(path, _pem(new.private_key), replace=True)
    log.info(
        "node_key_rotated",
        path=str(path),
        old_kid=old.kid,
        new_kid=new.kid,
        old_not_after=format_rfc3339(not_after),
    )
    return Rotation(old=old, new=new, old_not_after=not_after)


def remove_previous_key(path: Path) -> None:
    """Delete the retired key file (`<path>.prev`) for good, the removal made durable."""
    prev = previous_key_path(path)
    prev.unlink(missing_ok=True)
    _fsync_dir(prev.parent)


def load_previous_key(path: Path, node_id: str) -> RetiredKey | None:
    """The key the last rotation retired and its end of validity, or None if there is none."""
    prev = previous_key_path(path)
    try:
        data = _read_private(prev)
    except KeyMissingError:
        return None
    try:
        doc = json.loads(data)
        key = _parse_private_pem(doc["private_key_pem"].encode("ascii"), prev)
        not_after = parse_rfc3339(doc["not_after"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise KeyFormatError(f"previous-key file {prev} is unreadable: {err}", path=prev) from err
    return RetiredKey(NodeKey.for_node(key, node_id), not_after)


# ---------------------------------------------------------------- verification key ring


@dataclass(frozen=True)
class TrustedKey:
    """A public key allowed to sign, with an optional end of validity."""

    kid: str
    public_key: Ed25519PublicKey = field(repr=False)
    jwk: Mapping[str, Any] = field(repr=False)
    not_after: datetime | None = None

    def valid_at(self, when: datetime) -> bool:
        """Whether signatures made at `when` are accepted."""
        return self.not_after is None or when <= self.not_after


class KeyRing:
    """Public keys by kid: the cloud keys a node trusts, or the node keys the cloud trusts."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        for key in keys:
            self._keys[key.kid] = key

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> KeyRing:
        """A ring holding every key of the given JWK or JWK Set files."""
        ring = cls()
        for path in paths:
            ring.add_file(Path(path))
        return ring

    @classmethod
    def from_jwks(cls, jwks: Iterable[Mapping[str, Any]]) -> KeyRing:
        """A ring from JWK dicts."""
        ring = cls()
        for jwk in jwks:
            ring.add_jwk(jwk)
        return ring

    def add_jwk(
        self, jwk: Mapping[str, Any], *, not_after: datetime | None = None, kid: str | None = None
    ) -> TrustedKey:
        """Trust a public JWK under its `kid` (or `kid=`, or its bare thumbprint if it has none)."""
        public_key = public_key_from_jwk(jwk)
        name = kid or jwk.get("kid") or jwk_thumbprint(jwk)
        if not isinstance(name, str):
            raise KeyFormatError("JWK kid must be a string")
        trusted = TrustedKey(name, public_key, dict(jwk), not_after)
        self._keys[name] = trusted
        return trusted

    def add_file(self, path: Path) -> list[TrustedKey]:
        """Trust the key(s) of a JWK file or a JWK Set file (`{"keys": [...]}`)."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise KeyMissingError(f"key file {path} does not exist", path=Path(path)) from err
        except (OSError, ValueError) as err:
            raise KeyFormatError(f"key file {path} is not JSON: {err}", path=Path(path)) from err
        if not isinstance(doc, dict):
            raise KeyFormatError(f"key file {path} is not a JWK object", path=Path(path))
        jwks = doc.get("keys", [doc])
        if not isinstance(jwks, list) or not all(isinstance(j, dict) for j in jwks):
            raise KeyFormatError(f"key file {path}: 'keys' is not a list of JWKs", path=Path(path))
        added = []
        for jwk in jwks:
            try:
                added.append(self.add_jwk(jwk))
            except KeyFormatError as err:
                raise KeyFormatError(f"key file {path}: {err}", path=Path(path)) from err
        return added

    def retire(self, kid: str, not_after: datetime) -> None:
        """Limit a known key to signatures made up to `not_after`."""
        key = self._keys[kid]
        self._keys[kid] = TrustedKey(key.kid, key.public_key, key.jwk, not_after)

    def get(self, kid: str) -> TrustedKey | None:
        """The key with this kid, if trusted."""
        return self._keys.get(kid)

    def copy(self) -> KeyRing:
        """An independent ring with the same keys (a verifier learns keys without touching the caller's)."""
        return KeyRing(self._keys.values())

    def kids(self) -> list[str]:
        """The trusted kids, sorted."""
        return sorted(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(list(self._keys.values()))

    def __repr__(self) -> str:
        return f"KeyRing(kids={self.kids()!r})"
