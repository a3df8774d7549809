"""A text log's local wall-clock times as UTC, the hour that repeats told apart.

Problem: pfirewall.log writes local time with no offset. When daylight saving time
ends the clock shows one hour twice (in Berlin, 02:00-02:59 of the last Sunday of
October, first at UTC+02:00, then at UTC+01:00), and the time alone cannot say
which: read at the earlier offset, every line of the second pass lands an hour
early, where a drop can line up with the wrong migration or miss its own.

How: the log writes its lines in order, so the second pass starts where the clock
steps back, by more than half the change, to a time inside the repeated hour. From
that line on, the lines inside that day's repeated hour take the later offset. A
repeated hour with no line before the step (a quiet night) cannot be told apart;
its lines keep the earlier offset, and :func:`undecided` counts them so that the
caller can say so. A time that does not exist (the hour skipped in spring) is null.

The expressions read the rows in the order the log wrote them: a caller with rows of
several logs, or in another order, applies them ``.over(log, order_by=line)``.
"""

from __future__ import annotations

import polars as pl


def _readings(local: pl.Expr, zone: str) -> tuple[pl.Expr, pl.Expr]:
    """The earlier and the later UTC reading of each naive local time in ``zone``."""
    earlier, later = (
        local.dt.replace_time_zone(zone, ambiguous=pick, non_existent="null").dt.convert_time_zone(
            "UTC"
        )
        for pick in ("earliest", "latest")
    )
    return earlier, later


def repeats(local: pl.Expr, zone: str) -> pl.Expr:
    """Whether each naive local time lies in an hour that ``zone``'s clock repeats."""
    earlier, later = _readings(local, zone)
    return earlier != later


def _stepped_back(local: pl.Expr, earlier: pl.Expr, later: pl.Expr) -> pl.Expr:
    """Lines where the clock steps back into a repeated hour: the second pass starts."""
    repeated = earlier != later
    return repeated & (local < local.cum_max().shift(1) - (later - earlier) / 2)


def to_utc(local: pl.Expr, zone: str) -> pl.Expr:
    """Naive local times in ``zone`` as UTC, the repeated hour read by the log's order."""
    earlier, later = _readings(local, zone)
    fold_day = pl.when(_stepped_back(local, earlier, later)).then(local.dt.date()).forward_fill()
    second = ((earlier != later) & (local.dt.date() == fold_day)).fill_null(False)
    return pl.when(second).then(later).otherwise(earlier)


def undecided(local: pl.Expr, zone: str) -> pl.Expr:
    """Whether each line lies in a repeated hour that the log's order cannot place:
    no step back on its day (it was read at the earlier offset)."""
    earlier, later = _readings(local, zone)
    step_days = pl.when(_stepped_back(local, earlier, later)).then(local.dt.date())
    return (earlier != later) & ~local.dt.date().is_in(step_days.drop_nulls().implode())
