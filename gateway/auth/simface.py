"""SIMULATED face comparison for the embedded default: who the simulators show, not a real face check.

The simulated camera stamps the person in front of it into each frame's COM segment
(`... person=A`), and a simulated ID card's photo is `sample_photo(seed)` (person "A" for seed 0,
"B" for 1, ...). Same person: a high score; another person: a low one. Images that did not come
from the simulators are refused, never guessed at. `[auth.face] verifier = "sim"` uses this, and
the development cloud answers `face.compare` with it; production configs refuse it (see
`gateway.simulation`).

JPEG segment walk: markers are 0xFF followed by a code; COM is 0xFFFE and SOS 0xFFDA, each
marker segment carries a 2-byte big-endian length that counts itself (ITU-T T.81 Annex B.1.1.4
and Table B.1; libjpeg's rdjpgcom.c reads COM segments the same way).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from drivers.idcard.identity import sample_photo
from gateway.auth.errors import VerifierError
from gateway.auth.face import FaceResult, check_images

SIMULATION_LABEL = "SIMULATED face comparison (development only)"
MATCH_SCORE = 0.97
MISMATCH_SCORE = 0.08
PERSONS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_COM, _SOS = 0xFE, 0xDA


def jpeg_comments(jpeg: bytes) -> list[bytes]:
    """The COM segments before the first scan."""
    comments: list[bytes] = []
    i = 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF:
        marker = jpeg[i + 1]
        if marker in _STANDALONE or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == _SOS:
            break
        length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if length < 2 or i + 2 + length > len(jpeg):
            break
        if marker == _COM:
            comments.append(jpeg[i + 4 : i + 2 + length])
        i += 2 + length
    return comments


def camera_person(jpeg: bytes) -> str | None:
    """The person the simulated camera showed, from its COM stamp; None for any other JPEG."""
    for comment in jpeg_comments(jpeg):
        if not comment.startswith(b"edge-gateway-sim "):
            continue
        for field in comment.split():
            if field.startswith(b"person="):
                person = field[len(b"person=") :].decode("ascii", "replace")
                return person if len(person) == 1 and person in PERSONS else None
    return None


_PHOTOS = {sample_photo(seed): PERSONS[seed] for seed in range(len(PERSONS))}


def card_person(photo: bytes) -> str | None:
    """The person a simulated card's photo shows; None for a real card's photo."""
    return _PHOTOS.get(bytes(photo))


def compare_simulated(probe_jpeg: bytes, reference: bytes) -> tuple[FaceResult, str, str]:
    """(verdict, camera person, card person); VerifierError for images the simulators did not make."""
    check_images(probe_jpeg, reference)
    shown = camera_person(probe_jpeg)
    pictured = card_person(reference)
    if shown is None:
        raise VerifierError("not_a_simulated_frame", factor="face")
    if pictured is None:
        raise VerifierError("not_a_simulated_card_photo", factor="face")
    score = MATCH_SCORE if shown == pictured else MISMATCH_SCORE
    return FaceResult(score=score, liveness=True), shown, pictured


def compare_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """Answer a `face.compare` request body (base64 probe and reference) the way a cloud would."""
    try:
        probe = base64.b64decode(str(body.get("probe", "")), validate=True)
        reference = base64.b64decode(str(body.get("reference", "")), validate=True)
    except (binascii.Error, ValueError):
        return {"error": "images are not base64"}
    try:
        result, shown, pictured = compare_simulated(probe, reference)
    except VerifierError as err:
        return {"error": err.reason}
    return {
        "score": result.score,
        "liveness": result.liveness,
        "simulated": True,
        "match": shown == pictured,
    }


class SimFaceVerifier:
    """`[auth.face] verifier = "sim"`: the simulated comparison, clearly not a face check."""

    def __repr__(self) -> str:
        return "SimFaceVerifier(SIMULATED)"

    async def close(self) -> None:
        """Nothing to release."""

    async def compare(
        self,
        probe_jpeg: bytes,
        reference: bytes,
        *,
        timeout: float | None = None,
    ) -> FaceResult:
        """The simulated verdict; VerifierError for images that are not the simulators'."""
        return compare_simulated(probe_jpeg, reference)[0]
