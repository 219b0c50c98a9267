"""The monitored time window `[start, end)`: parsed from the monitor's parameters, and the
`date=` partitions of the prediction log it touches."""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any

from conveyor.errors import InputError

_UTC = datetime.UTC


@dataclasses.dataclass(frozen=True)
class Window:
    start: datetime.datetime
    end: datetime.datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600

    def dates(self) -> list[str]:
        """The `date=` partitions the window touches (UTC days)."""
        day, last = self.start.date(), (self.end - datetime.timedelta(microseconds=1)).date()
        out = []
        while day <= last:
            out.append(day.isoformat())
            day += datetime.timedelta(days=1)
        return out

    def describe(self) -> str:
        return f"[{iso(self.start)}, {iso(self.end)})"

    def to_dict(self) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), "hours": round(self.hours, 6)}


def iso(moment: datetime.datetime) -> str:
    """A moment as ISO 8601 in UTC, with a `Z`."""
    return moment.astimezone(_UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str, parameter: str) -> datetime.datetime:
    """An ISO 8601 date or time; UTC unless it says otherwise."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise InputError(f"{parameter}: {text!r} is not an ISO 8601 time "
                         "(e.g. 2026-12-02T06:00:00Z or 2026-12-02)") from None
    return moment.replace(tzinfo=_UTC) if moment.tzinfo is None else moment.astimezone(_UTC)


def window(end: str = "", hours: float = 24.0, start: str = "",
           now: datetime.datetime | None = None) -> Window:
    """`[start, end)`: `end` (default now) minus `hours`, unless `start` is given."""
    stop = parse_time(end, "window_end") if end else (now or datetime.datetime.now(_UTC))
    if start:
        begin = parse_time(start, "window_start")
    else:
        if not isinstance(hours, (int, float)) or not 0 < hours < math.inf:
            raise InputError(f"window_hours: expected a positive number of hours, got {hours!r}")
        begin = stop - datetime.timedelta(hours=hours)
    if begin >= stop:
        raise InputError(f"window: the start {iso(begin)} is not before the end {iso(stop)}")
    return Window(begin, stop)

