"""The service centre's figures per station and day: sessions, uses, transactions, session time,
ratings and complaints, and an hourly histogram (the plan's heat map).

A "use" is a session in which the citizen had a device do something or sent a transaction; a
session opened and abandoned is counted as a session, not a use. Kept with the device usage in the
daily roll-up (`device_usage_daily` gains `stations`), so a restart keeps the day's counts.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.status import StationFigures

HOURS = 24


@dataclass
class _StationDay:
    """One station on one day."""

    sessions: int = 0
    uses: int = 0
    transactions: int = 0
    ended: int = 0
    session_s: float = 0.0
    rated: int = 0
    rating_sum: int = 0
    complaints: int = 0
    hours: list[int] = field(default_factory=lambda: [0] * HOURS)

    def summary(self) -> StationFigures:
        return StationFigures(
            sessions=self.sessions,
            uses=self.uses,
            transactions=self.transactions,
            mean_session_s=round(self.session_s / self.ended, 1) if self.ended else None,
            rated=self.rated,
            mean_rating=round(self.rating_sum / self.rated, 2) if self.rated else None,
            complaints=self.complaints,
            complaint_rate=round(self.complaints / self.rated, 4) if self.rated else 0.0,
            hourly_sessions=list(self.hours),
        )

    def dump(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "uses": self.uses,
            "transactions": self.transactions,
            "ended": self.ended,
            "session_s": self.session_s,
            "rated": self.rated,
            "rating_sum": self.rating_sum,
            "complaints": self.complaints,
            "hours": list(self.hours),
        }

    def merge(self, raw: dict[str, Any]) -> None:
        for key in ("sessions", "uses", "transactions", "ended", "rated", "rating_sum", "complaints"):
            setattr(self, key, getattr(self, key) + int(raw.get(key, 0)))
        self.session_s += float(raw.get("session_s", 0.0))
        hours = raw.get("hours", [])
        if isinstance(hours, list) and len(hours) == HOURS:
            self.hours = [a + int(b) for a, b in zip(self.hours, hours, strict=True)]


class StationUsage:
    """Counts per station per calendar day (local time unless `tz` is given)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        day: Callable[[], dt.date] | None = None,
        tz: dt.tzinfo | None = None,
        stations: Iterable[str] = (),
    ) -> None:
        self._clock = clock
        self._tz = tz
        # Which day a count goes to (the usage tracker's rule for clock steps); else today.
        self._day = day or (lambda: self._now().date())
        self.stations: list[str] = list(stations)
        self._days: dict[dt.date, dict[str, _StationDay]] = {}

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), self._tz)

    def _today(self, station: str) -> _StationDay:
        return self._days.setdefault(self._day(), {}).setdefault(station, _StationDay())

    def session_started(self, station: str) -> None:
        figures = self._today(station)
        figures.sessions += 1
        figures.hours[self._now().hour] += 1

    def session_ended(self, station: str, seconds: float, *, used: bool) -> None:
        figures = self._today(station)
        figures.ended += 1
        figures.session_s += max(0.0, seconds)
        if used:
            figures.uses += 1

    def transaction(self, station: str) -> None:
        self._today(station).transactions += 1

    def feedback(self, station: str, rating: int, complaint: bool) -> None:
        figures = self._today(station)
        figures.rated += 1
        figures.rating_sum += rating
        if complaint:
            figures.complaints += 1

    def rollup(self, day: dt.date) -> dict[str, StationFigures]:
        """Every configured station's figures for `day`, zeros where unused."""
        figures = self._days.get(day, {})
        names = list(dict.fromkeys([*self.stations, *sorted(figures)]))
        return {name: figures.get(name, _StationDay()).summary() for name in names}

    def today(self) -> dict[str, StationFigures]:
        return self.rollup(self._day())

    def forget(self, through: dt.date) -> None:
        for day in [d for d in self._days if d <= through]:
            del self._days[day]

    def dump(self) -> dict[str, Any]:
        return {
            day.isoformat(): {name: f.dump() for name, f in figures.items()}
            for day, figures in self._days.items()
        }

    def take_live(self) -> dict[str, Any]:
        """The figures counted so far as `dump` data, cleared (merged back with `restore`)."""
        live = self.dump()
        self._days = {}
        return live

    def restore(self, data: dict[str, Any], *, floor: dt.date | None = None) -> None:
        """Merge counts saved by an earlier run (they add up); a day before `floor` counts on it."""
        for day_text, figures in data.items():
            when = dt.date.fromisoformat(day_text)
            day = self._days.setdefault(max(when, floor) if floor is not None else when, {})
            for name, raw in figures.items():
                day.setdefault(name, _StationDay()).merge(raw)
