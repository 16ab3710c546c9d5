"""The building blocks every config table shares: the strict table base, positive numbers, a device queue."""

from __future__ import annotations

from typing import Annotated

import msgspec

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config table: unknown keys are errors."""


class QueueConfig(Section):
    depth: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    deadline_s: PositiveFloat = 30.0
