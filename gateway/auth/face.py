"""Face verifiers: compare a camera capture with the ID card photo via a local service or the cloud."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog

from gateway.auth.errors import FactorUnavailable, Offline, VerifierError, VerifierTimeout

log = structlog.get_logger(__name__)

CloudRequest = Callable[..., Awaitable[dict[str, Any]]]
"""`async cloud_request(type: str, body: dict, *, timeout: float) -> dict` (the lead's uplink)."""

MAX_ANSWER_BYTES = 64 * 1024
MAX_IMAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FaceResult:
    """A verifier's verdict: similarity in [0, 1] and whether the capture was of a live person."""

    score: float
    liveness: bool


class FaceVerifier(Protocol):
    """Anything that compares a probe JPEG with a reference photo (opaque bytes, e.g. WLT)."""

    async def compare(
        self,
        probe_jpeg: bytes,
        reference: bytes,
        *,
        timeout: float | None = None,
    ) -> FaceResult:
        """Compare, or raise VerifierError / FactorUnavailable; never grant on a bad answer."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def face_request_body(probe_jpeg: bytes, reference: bytes) -> dict[str, str]:
    """The JSON body both verifiers send (documented in docs/auth.md)."""
    return {
        "probe": base64.b64encode(probe_jpeg).decode(),
        "probe_format": "jpeg",
        "reference": base64.b64encode(reference).decode(),
        "reference_format": "wlt",
    }


def parse_face_result(answer: object) -> FaceResult:
    """Validate `{"score": 0..1, "liveness": bool}`; anything else is a VerifierError."""
    if not isinstance(answer, dict):
        raise VerifierError("answer_not_an_object", factor="face")
    score = answer.get("score")
    liveness = answer.get("liveness")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise VerifierError("answer_score_missing", factor="face")
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise VerifierError("answer_score_out_of_range", factor="face")
    if not isinstance(liveness, bool):
        raise VerifierError("answer_liveness_missing", factor="face")
    return FaceResult(score=float(score), liveness=liveness)


def check_images(probe_jpeg: bytes, reference: bytes) -> None:
    if not probe_jpeg.startswith(b"\xff\xd8"):
        raise VerifierError("probe_not_jpeg", factor="face")
    if not reference:
        raise VerifierError("reference_missing", factor="face")
    if len(probe_jpeg) > MAX_IMAGE_BYTES or len(reference) > MAX_IMAGE_BYTES:
        raise VerifierError("image_too_large", factor="face")


class HttpFaceVerifier:
    """A local vendor face-compare service: POST JSON with both images, JSON verdict back."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpFaceVerifier({self.url!r})"

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def compare(
        self,
        probe_jpeg: bytes,
        reference: bytes,
        *,
        timeout: float | None = None,
    ) -> FaceResult:
        """POST the images and parse the verdict, all within `timeout` seconds."""
        check_images(probe_jpeg, reference)
        limit = self.timeout if timeout is None else timeout
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = face_request_body(probe_jpeg, reference)
        try:
            async with asyncio.timeout(limit):
                async with self._session.post(self.url, json=body) as resp:
                    raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                    status = resp.status
        except TimeoutError as err:
            log.warning("face_verifier_timeout", url=self.url, timeout_s=limit)
            raise VerifierTimeout(f"no answer within {limit} s", factor="face") from err
        except (aiohttp.ClientError, OSError) as err:
            log.warning("face_verifier_unreachable", url=self.url, error=type(err).__name__)
            raise VerifierError("unreachable", factor="face") from err
        if status != 200:
            raise VerifierError(f"http_status_{status}", factor="face")
        if len(raw) > MAX_ANSWER_BYTES:
            raise VerifierError("answer_too_large", factor="face")
        try:
            answer = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise VerifierError("answer_not_json", factor="face") from err
        return parse_face_result(answer)


class CloudFaceVerifier:
    """Face comparison by the cloud over the signed uplink (type `face.compare`)."""

    def __init__(
        self,
        cloud_request: CloudRequest,
        *,
        timeout: float = 5.0,
        is_online: Callable[[], bool] | None = None,
    ) -> None:
        self._cloud_request = cloud_request
        self.timeout = timeout
        self._is_online = is_online

    def __repr__(self) -> str:
        return "CloudFaceVerifier()"

    async def close(self) -> None:
        """Nothing to release: the uplink belongs to the caller."""

    async def compare(
        self,
        probe_jpeg: bytes,
        reference: bytes,
        *,
        timeout: float | None = None,
    ) -> FaceResult:
        """Ask the cloud; with the link down answer FactorUnavailable at once."""
        check_images(probe_jpeg, reference)
        if self._is_online is not None and not self._is_online():
            raise FactorUnavailable("offline", factor="face")
        limit = self.timeout if timeout is None else timeout
        body = face_request_body(probe_jpeg, reference)
        try:
            async with asyncio.timeout(limit):
                answer = await self._cloud_request("face.compare", body, timeout=limit)
        except Offline as err:
            raise FactorUnavailable("offline", factor="face") from err
        except TimeoutError as err:
            raise FactorUnavailable("cloud_timeout", factor="face") from err
        return parse_face_result(answer)


class NoFaceVerifier:
    """`verifier = "none"`: the face factor is switched off on this node."""

    def __repr__(self) -> str:
        return "NoFaceVerifier()"

    async def close(self) -> None:
        """Nothing to release."""

    async def compare(
        self,
        probe_jpeg: bytes,
        reference: bytes,
        *,
        timeout: float | None = None,
    ) -> FaceResult:
        """Always unavailable."""
        raise FactorUnavailable("face_verifier_disabled", factor="face")
