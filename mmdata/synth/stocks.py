"""Synthetic daily stock CSVs in Yahoo's schema, one per ticker, with volatility that only fusion predicts well.

Files written under ``out``: ``<TICKER>.csv`` for every ticker of :data:`mmdata.corpora.stocks.GROUPS`, each
``Date,Open,High,Low,Close,Adj Close,Volume`` with one row per trading day (weekdays minus a few fixed
holidays), prices with 6 decimals as Yahoo writes them.

Signal: each HEALTH ticker's daily return loads 0.8 on a daily HEALTH factor, each TECH ticker's on a TECH
factor (independent normal draws per day: sector moves). The target MCD's return on day t + 1 has
log-volatility ``-0.35 * (health_t + tech_t)``: sector sell-offs raise MCD's volatility the next day (a
leverage-style spillover), so the label after a window is set by the last day of the HEALTH and TECH windows
together. HEALTH alone sees half of it, TECH alone the other half, F&B (MCD's own past included) nothing:
only the fused model predicts well. The other F&B tickers are independent noise. MCD's return size jitters
by +-20% only (real returns are heavier-tailed), so that the signal is learnable from a few hundred windows.

With ``defects`` (the default) the files carry what real downloads carry, each a documented repair in the
reader: GOOG starts 15 trading days late (it listed in 2004: a shorter history limits the aligned span), HSY
has a ``null`` row (Yahoo's marker for a day without data), AAPL a repeated date, NVDA two missing days and
ZBRA two rows out of order. MCD, the target, is left clean. Draws come from ``make_rng(seed, "stocks", ...)``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mmdata.errors import ConfigError
from mmdata.rng import make_rng

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
HOLIDAYS = ("01-01", "07-04", "12-25")
#: Loading of HEALTH / TECH tickers on their sector factor; MCD's log-volatility per unit of each factor.
LOADING, SPILLOVER = 0.8, 0.35
LATE_START = {"GOOG": 15}


def _exp(x: np.ndarray | float) -> np.ndarray:
    """``exp`` elementwise by libm (``math.exp``), same shape as ``x``: ``np.exp`` switches to numpy's own AVX-512
    code on CPUs that have it, which rounds some values differently, and the prices are written to 6 decimals."""
    return np.asarray(np.frompyfunc(math.exp, 1, 1)(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def generate(out: Path, *, seed: int = 0, days: int = 4300, start: str = "2001-01-02",
             defects: bool = True) -> Path:
    """Write one Yahoo-schema CSV per ticker under ``out``.

    Args:
        out: root folder to create.
        seed: base seed; the same seed gives byte-identical files.
        days: trading days per (full-history) ticker; the default (~17 years) fits the reader's defaults,
            MultiBench's window 500 and 3200 + 500 windows (params.yaml's mini uses 420 days, window 40).
        start: first calendar day (YYYY-MM-DD).
        defects: inject the repairs described in the module docstring.

    Returns:
        ``out``, the root to hand to :mod:`mmdata.corpora.stocks`.
    """
    from mmdata.corpora.stocks import GROUPS, TARGET  # here: the registry import would load every reader

    if days < 40:
        raise ConfigError(f"need days >= 40, got {days}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    calendar = _calendar(start, days)
    returns = _returns(make_rng(seed, "stocks", "returns"), days, GROUPS, TARGET)
    for ticker, column in returns.items():
        rng = make_rng(seed, "stocks", "ticker", ticker)
        opens = rng.uniform(20.0, 200.0) * _exp(np.concatenate([[0.0], np.cumsum(column)]))
        rows = _rows(rng, calendar, opens)
        if defects:
            rows = _defects(ticker, rows)
        (out / f"{ticker}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return out


def _calendar(start: str, days: int) -> list[str]:
    """``days`` weekdays from ``start`` that are not fixed holidays, as YYYY-MM-DD."""
    first = np.datetime64(start, "D")
    span = np.arange(first, first + days * 2 + 30)
    keep = np.is_busday(span) & ~np.isin([str(d)[5:] for d in span], HOLIDAYS)
    return [str(d) for d in span[keep][:days]]


def _returns(rng: np.random.Generator, days: int, groups: dict[str, tuple[str, ...]],
             target: str) -> dict[str, np.ndarray]:
    """Daily log returns [days - 1] per ticker (return t moves Open t to Open t + 1)."""
    n = days - 1
    factors = {"health": rng.normal(0.0, 1.0, n), "tech": rng.normal(0.0, 1.0, n)}
    # Leverage-style spillover: sector sell-offs on day t raise MCD's volatility on day t + 1.
    spill = -SPILLOVER * (factors["health"] + factors["tech"])
    target_log_vol = np.concatenate([[0.0], spill[:-1]])
    out = {}
    for group, tickers in groups.items():
        for ticker in tickers:
            size = _exp(math.log(0.012) + rng.normal(0.0, 0.2))
            if group in factors:
                move = LOADING * factors[group] + np.sqrt(1 - LOADING ** 2) * rng.normal(0.0, 1.0, n)
            elif ticker == target:
                move = _exp(target_log_vol) * rng.uniform(0.8, 1.2, n) * rng.choice([-1.0, 1.0], n)
            else:
                move = rng.normal(0.0, 1.0, n)
            out[ticker] = size * move
    return out


def _rows(rng: np.random.Generator, calendar: list[str], opens: np.ndarray) -> list[str]:
    """CSV rows with plausible High/Low/Close/Adj Close/Volume around each Open."""
    n = len(opens)
    close = opens * _exp(rng.normal(0.0, 0.006, n))
    high = np.maximum(opens, close) * (1 + np.abs(rng.normal(0.0, 0.004, n)))
    low = np.minimum(opens, close) * (1 - np.abs(rng.normal(0.0, 0.004, n)))
    volume = np.rint(_exp(rng.normal(14.0, 0.5, n))).astype(np.int64)
    return [f"{d},{o:.6f},{h:.6f},{lo:.6f},{c:.6f},{c * 0.97:.6f},{v}"
            for d, o, h, lo, c, v in zip(calendar, opens, high, low, close, volume)]


def _defects(ticker: str, rows: list[str]) -> list[str]:
    """The per-ticker defects of the module docstring (positions fixed, away from the first window)."""
    late = LATE_START.get(ticker, 0)
    rows, middle = rows[late:], len(rows) // 2 - late  # the same calendar day for every ticker
    if ticker == "HSY":
        rows[middle - 5] = rows[middle - 5].split(",")[0] + ",null,null,null,null,null,null"
    elif ticker == "AAPL":
        rows.insert(middle + 1, rows[middle])
    elif ticker == "NVDA":
        del rows[middle + 3:middle + 5]
    elif ticker == "ZBRA":
        rows[middle + 8], rows[middle + 9] = rows[middle + 9], rows[middle + 8]
    return rows
