"""Daily price CSVs (Yahoo Finance schema) -> one aligned [day, ticker] matrix, with every repair counted.

Yahoo's download (``Date,Open,High,Low,Close,Adj Close,Volume``, one file per symbol) is parsed row by row.
Rules, each counted per ticker so that ``rows == kept + sum(dropped)`` always holds (reliability.md 6.9):

- an Open of ``null`` (Yahoo's marker of a day without data) -> dropped, ``no_data_row``; any other Open that
  is not a finite number (``1.234,56`` is a decimal comma) -> dropped, ``non_numeric_price``; Open <= 0 ->
  dropped, ``non_positive_price``;
- a date that is not ``YYYY-MM-DD`` (a time or zone suffix after it is ignored: daily bars) -> dropped,
  ``bad_date``; a row too short to hold Date and Open (a footer) -> dropped, ``malformed_row``;
- a repeated date -> the first row is kept, later ones dropped, ``duplicate_date``;
- rows out of date order -> sorted (``unsorted`` = 1 for the file).

More than :data:`MAX_BAD_ROWS` of a file's rows unparseable (:data:`FORMAT_REASONS`) means a format problem
(delimiter, decimal separator, date format), not stray rows: ValueError naming the file and the first bad line.
Yahoo's ``null`` days and other dropped rows never count towards it, however many: the file is read as Yahoo
writes it, and the days are forward-filled or dropped by the alignment like any missing day.

Then tickers are aligned on one calendar (:func:`align`): the span is the overlap of all histories (a ticker
that starts late or ends early limits it, and is named), and inside it either missing days are forward-filled
(``ffill``: the last Open is carried, a zero return that day) or only the days every ticker has are kept
(``intersect``). Both are reported per ticker, never done silently.
"""
from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import BadInputError

#: Largest share of a file's rows that may be dropped before the file counts as unreadable.
MAX_BAD_ROWS = 0.05
#: Drop reasons that point at a file in another format; only these count towards :data:`MAX_BAD_ROWS`.
FORMAT_REASONS = ("non_numeric_price", "bad_date", "malformed_row")
ALIGN_RULES = ("ffill", "intersect")


@dataclass
class Prices:
    """One ticker's clean Open series and what was dropped on the way.

    Attributes:
        dates: trading days, datetime64[D] [n], strictly increasing.
        opens: Open prices float64 [n], finite and positive.
        rows: data rows in the file (blank lines not counted).
        dropped: reason -> rows dropped.
        events: (date or None, reason) per dropped row and for a sort, to attribute repairs to splits.
        unsorted: whether the rows had to be sorted.
    """

    dates: np.ndarray
    opens: np.ndarray
    rows: int
    dropped: Counter = field(default_factory=Counter)
    events: list[tuple[np.datetime64 | None, str]] = field(default_factory=list)
    unsorted: bool = False


def _parse_date(text: str) -> np.datetime64 | None:
    try:
        return np.datetime64(date.fromisoformat(text.strip()[:10]), "D")
    except ValueError:
        return None


def _parse_open(text: str) -> tuple[float | None, str | None]:
    if text.strip().lower() == "null":  # Yahoo's day without data: a valid row of its format
        return None, "no_data_row"
    try:
        value = float(text)
    except ValueError:
        return None, "non_numeric_price"
    if not np.isfinite(value):
        return None, "non_numeric_price"
    return (value, None) if value > 0 else (None, "non_positive_price")


def read_prices(path: Path) -> Prices:
    """Parse one daily CSV (Yahoo schema; only ``Date`` and ``Open`` are required) with the rules above.

    Raises:
        ValueError: no Date/Open header, no usable row, or more than MAX_BAD_ROWS of the rows dropped.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a BOM would rename the first column
        lines = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    header = [cell.strip().lower() for cell in lines[0]] if lines else []
    if "date" not in header or "open" not in header:
        raise BadInputError(f"{path}: header {lines[0] if lines else []} lacks Date and Open (Yahoo schema: Date,"
                         f"Open,High,Low,Close,Adj Close,Volume)")
    at_date, at_open = header.index("date"), header.index("open")
    needed = max(at_date, at_open) + 1
    kept: dict[np.datetime64, float] = {}
    out, first_bad, order = Prices(np.array([], "datetime64[D]"), np.array([]), len(lines) - 1), None, []
    for number, row in enumerate(lines[1:], start=2):
        day = _parse_date(row[at_date]) if len(row) >= needed else None
        price, reason = _parse_open(row[at_open]) if day is not None else (None, None)
        reason = ("malformed_row" if len(row) < needed else "bad_date") if day is None else reason
        if reason is None and day in kept:
            reason = "duplicate_date"
        if reason is not None:
            out.dropped[reason] += 1
            out.events.append((day, reason))
            first_bad = first_bad or f"line {number}: {','.join(row)[:60]!r} ({reason})"
            continue
        kept[day] = price
        order.append(day)
    unparsed = sum(out.dropped[reason] for reason in FORMAT_REASONS)
    if not kept or unparsed > MAX_BAD_ROWS * max(out.rows, 1):
        raise BadInputError(f"{path}: {sum(out.dropped.values())} of {out.rows} rows unusable "
                         f"{dict(out.dropped)}; first {first_bad}; check the delimiter and decimal separator")
    breaks = [b for a, b in zip(order, order[1:]) if b <= a]
    if breaks:  # counted once per file, at the first row out of order
        out.unsorted = True
        out.events.append((breaks[0], "unsorted"))
    days = np.array(sorted(kept), dtype="datetime64[D]")
    out.dates, out.opens = days, np.array([kept[d] for d in days], dtype=np.float64)
    return out


def align(prices: dict[str, Prices], *, rule: str = "ffill", start: str | None = None,
          end: str | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One calendar for all tickers.

    Args:
        prices: ticker -> parsed series (column order = dict order).
        rule: "ffill" (union of days, gaps carry the last Open) or "intersect" (days every ticker has).
        start, end: optional ``YYYY-MM-DD`` bounds on the span.

    Returns:
        ``(days [T] datetime64[D], opens [T, n] float64, report)``; the report has ``span``, ``limited_by``
        (tickers whose first or last day sets the span), ``days`` and per ticker ``rows``, ``kept``,
        ``dropped``, ``unsorted``, ``first``, ``last``, ``trimmed`` (kept days outside the span), ``filled``
        (ffill) or ``unshared`` (intersect) with ``kept == trimmed + in_span`` and
        ``days == in_span + filled`` (ffill) or ``in_span - unshared`` (intersect).

    Raises:
        ValueError: unknown rule, or no overlapping day.
    """
    if rule not in ALIGN_RULES:
        raise ValueError(f"align rule {rule!r} not in {ALIGN_RULES}")
    firsts = {t: p.dates[0] for t, p in prices.items()}
    lasts = {t: p.dates[-1] for t, p in prices.items()}
    lo = max([*firsts.values(), *([np.datetime64(start, "D")] if start else [])])
    hi = min([*lasts.values(), *([np.datetime64(end, "D")] if end else [])])
    if lo > hi:
        raise BadInputError(f"the price histories do not overlap (latest start {lo}, earliest end {hi})")
    inside = {t: p.dates[(p.dates >= lo) & (p.dates <= hi)] for t, p in prices.items()}
    days = np.unique(np.concatenate(list(inside.values())))
    if rule == "intersect":
        days = days[np.all([np.isin(days, d) for d in inside.values()], axis=0)]
    late = {t for t, d in firsts.items() if d == lo and lo > min(firsts.values())}
    early = {t for t, d in lasts.items() if d == hi and hi < max(lasts.values())}
    report: dict[str, Any] = {"span": [str(lo), str(hi)], "days": int(len(days)), "rule": rule,
                              "limited_by": sorted(late | early), "tickers": {}}
    columns = []
    for ticker, p in prices.items():
        at = np.searchsorted(p.dates, days, side="right") - 1  # the last trading day on or before each day
        columns.append(p.opens[at])
        report["tickers"][ticker] = _ticker_report(p, days, at, len(inside[ticker]), rule)
    return days, np.stack(columns, axis=1), report


def _ticker_report(p: Prices, days: np.ndarray, at: np.ndarray, in_span: int, rule: str) -> dict[str, Any]:
    """One ticker's counts (see :func:`align`); ``at`` indexes the row used for each aligned day."""
    extra = {"filled": int(np.sum(p.dates[at] != days))} if rule == "ffill" else {"unshared": in_span - len(days)}
    return {"rows": p.rows, "kept": int(len(p.dates)), "dropped": dict(p.dropped), "unsorted": int(p.unsorted),
            "first": str(p.dates[0]), "last": str(p.dates[-1]), "trimmed": int(len(p.dates) - in_span), **extra}


def log_returns(opens: np.ndarray) -> np.ndarray:
    """MultiBench's ``RX = log(Open[t + 1] / Open[t])``: aligned Opens [T, n] -> log returns [T - 1, n] float64.

    The log of the ratio, as MultiBench writes it, not a difference of logs: log(100) carries an absolute rounding
    error hundreds of times that of a ~0.01 return, enough to change the stored float32 values. And libm's log
    (``math.log``), not ``np.log``: numpy uses its own AVX-512 log on CPUs that have it, which rounds some values
    differently, so the shards would depend on the machine.
    """
    ratio = np.asarray(opens, dtype=np.float64)[1:] / np.asarray(opens, dtype=np.float64)[:-1]
    return np.asarray(np.frompyfunc(math.log, 1, 1)(ratio), dtype=np.float64)


def repair_events(prices: dict[str, Prices], days: np.ndarray, rule: str) -> list[tuple[np.datetime64, str]]:
    """(day, reason) of every repair inside the aligned span: dropped rows, sorts, fills, unshared days."""
    lo, hi = days[0], days[-1]
    events = []
    for p in prices.values():
        events += [(d, r) for d, r in p.events if d is not None and lo <= d <= hi]
        inside = p.dates[(p.dates >= lo) & (p.dates <= hi)]
        if rule == "ffill":
            events += [(d, "forward_filled") for d in days[~np.isin(days, p.dates)]]
        else:
            events += [(d, "dropped_unshared_date") for d in inside[~np.isin(inside, days)]]
    return events
