"""The one place that decides whether a session's factors authorise a protected operation."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from gateway.auth.factors import AuthState, ProvenFactor
from gateway.auth.settings import OperationPolicy, PolicySettings

Level = Literal["none", "single", "two_factor"]

# Clock skew tolerated for a factor stamped slightly in the future (e.g. NTP step).
_FUTURE_SKEW_S = 5.0


@dataclass(frozen=True, slots=True)
class Assurance:
    """What a session has proven, safe to show: factors, categories, masked subjects, level."""

    level: Level
    factors: tuple[ProvenFactor, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for GET /v1/sessions/{id}."""
        return {
            "level": self.level,
            "factors": [f.as_dict() for f in self.factors],
            "categories": sorted({f.category for f in self.factors}),
            "subjects": sorted({f.subject.masked for f in self.factors}),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one operation: allowed or not, why, and the session's assurance."""

    operation: str
    allowed: bool
    reason: str
    assurance: Assurance
    used: tuple[ProvenFactor, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (masked) form for audit and problem bodies."""
        return {
            "operation": self.operation,
            "allowed": self.allowed,
            "reason": self.reason,
            "level": self.assurance.level,
            "used": [f.kind for f in self.used],
        }


@dataclass(frozen=True, slots=True)
class _Rules:
    min_factors: int
    distinct_categories: bool
    same_subject: bool
    require_cryptographic: bool
    offline_combos: tuple[frozenset[str], ...] | None  # None: online, no combo needed


def _satisfies(factors: Sequence[ProvenFactor], rules: _Rules) -> bool:
    if len(factors) < rules.min_factors:
        return False
    if rules.distinct_categories and len({f.category for f in factors}) != len(factors):
        return False
    if rules.same_subject and len({f.subject for f in factors}) != 1:
        return False
    if rules.require_cryptographic and not any(f.cryptographic for f in factors):
        return False
    if rules.offline_combos is not None:
        kinds = {f.kind for f in factors}
        return any(combo <= kinds for combo in rules.offline_combos)
    return True


def _search(factors: Sequence[ProvenFactor], rules: _Rules) -> tuple[ProvenFactor, ...] | None:
    """The smallest set of held factors that meets every rule, if any (factors are few)."""
    for size in range(rules.min_factors, len(factors) + 1):
        for combo in itertools.combinations(factors, size):
            if _satisfies(combo, rules):
                return combo
    return None


# Which rule to relax, and the reason to give when relaxing it is what would allow the operation.
_RELAXATIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("same_category", {"distinct_categories": False}),
    ("different_subjects", {"same_subject": False}),
    ("no_cryptographic_factor", {"require_cryptographic": False}),
    ("offline_combination_not_allowed", {"offline_combos": None}),
)

_GENERIC = _Rules(2, True, True, True, None)


class Policy:
    """Evaluates `[auth.policy.<operation>]` against an AuthState; pure apart from the clock."""

    def __init__(self, settings: PolicySettings, *, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self._assurance_age = max(
            p.max_factor_age_s
            for p in (settings.transaction, settings.certificate_print, settings.maintenance)
        )

    def _valid(self, state: AuthState, max_age_s: float) -> list[ProvenFactor]:
        now = self._clock()
        return [
            f
            for f in state.factors
            if f.session_id == state.session_id and now - max_age_s <= f.at <= now + _FUTURE_SKEW_S
        ]

    def assurance(self, state: AuthState) -> Assurance:
        """The session's assurance, independent of any operation."""
        valid = self._valid(state, self._assurance_age)
        if not valid:
            level: Level = "none"
        elif _search(valid, _GENERIC) is not None:
            level = "two_factor"
        else:
            level = "single"
        return Assurance(level, tuple(valid))

    def evaluate(self, operation: str, state: AuthState, *, online: bool) -> Decision:
        """Allowed only if one subject proved enough factors, as this operation's policy says."""
        assurance = self.assurance(state)

        def deny(reason: str) -> Decision:
            return Decision(operation, False, reason, assurance)

        policy = self._settings.get(operation)
        if policy is None:
            return deny("unknown_operation")
        if state.kind not in policy.session_kinds:
            return deny("session_kind_not_allowed")
        if not state.factors:
            return deny("no_factors")
        own = [f for f in state.factors if f.session_id == state.session_id]
        foreign = len(state.factors) - len(own)
        valid = self._valid(state, policy.max_factor_age_s)
        rules = self._rules(policy, online=online)
        if not own:
            return deny("factor_from_other_session")
        if not valid:
            return deny("factors_expired")
        used = _search(valid, rules)
        if used is not None:
            return Decision(operation, True, "ok", assurance, used)
        if len(valid) < policy.min_factors:
            if foreign and len(valid) + foreign >= policy.min_factors:
                return deny("factor_from_other_session")
            if len(own) >= policy.min_factors:
                return deny("factors_expired")
            return deny("not_enough_factors")
        if not online and not policy.offline_allowed:
            return deny("offline_not_allowed")
        for reason, relaxed in _RELAXATIONS:
            if _search(valid, replace(rules, **relaxed)) is not None:
                return deny(reason)
        return deny("insufficient_factors")

    @staticmethod
    def _rules(policy: OperationPolicy, *, online: bool) -> _Rules:
        combos = None if online else tuple(frozenset(c) for c in policy.offline_allowed)
        return _Rules(
            policy.min_factors,
            policy.distinct_categories,
            policy.same_subject,
            policy.require_cryptographic,
            combos,
        )
