"""Stock series reader (MultiBench "finance" construction) over daily CSVs, one per ticker, in Yahoo's schema.

Provenance (corpora.md section 9): MultiBench's ``datasets/stocks/get_data.py`` downloads Yahoo daily CSVs
(``Date,Open,High,Low,Close,Adj Close,Volume``) and uses Open only. Layout read here: ``<root>/<TICKER>.csv``,
as Yahoo names its downloads. Ticker groups (the modalities) are those of the Progressive Fusion appendix C,
which contain MultiBench's example lists (F&B MCD SBUX HSY HRL, Health MRK WST CVS MCK ABT UNH TFX, Tech AAPL
MSFT AMZN INTC AMD MSI); tickers are sorted alphabetically within a group, as MultiBench's examples do.

Construction, following MultiBench step by step on the aligned Open matrix (T days x n tickers):

1. ``RX = log(Open[t + 1] / Open[t])`` -> [T - 1, n] (the row's date is day t + 1).
2. Target ``Y[i] = RX[i + window, target] ** 2``: the next-day squared log return after window i.
3. Normalisation from the training part only: ``RX /= std(RX[:window + train_windows])`` (one scalar over all
   tickers) and ``Y /= std(Y[:train_windows])``; both slices end at the last training target, which
   :func:`_check_no_lookahead` asserts.
4. Window i is ``RX[i:i + window]`` per group; splits by time: train the first ``train_windows`` windows,
   valid the next ``valid_windows``, test the rest (MultiBench: 3200 / 500 / rest, window 500).

MultiBench's 26-level quantisation in ``__getitem__`` is a model-input choice, not part of the data, and is
not applied. Storage: one stored sample per split holds that split's aligned series once (``series_<group>``
[days, tickers] float32 as an Arrow table, ``meta_dates``, per-window targets as ``label``) and one
``__rows__`` entry per window; the ``window`` :class:`~mmdata.types.View` cuts windows at read time, so shard
bytes grow with days, not with days x window (each split stores the days its windows read, so consecutive
splits share window - 1 days).
MultiBench's noisy test loaders (noise levels 0.0-0.8) are a robustness protocol, left to the augmenters.
Gaps, bad rows and short histories follow :mod:`mmdata.modalities.series` and are counted: per split as
``__repairs__`` (by date), per ticker in :func:`alignment_report` and in the manifest's release text.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.corpora.base import REPAIRS, SOURCE, Corpus, RawCount, Skip, require_root
from mmdata.corpora.ledger import check_split, raw_count
from mmdata.errors import ConfigError
from mmdata.modalities.series import align, log_returns, read_prices, repair_events
from mmdata.types import ROWS, Features, Field, Sample, View, make_key

NAME = "stocks"
#: Ticker groups of the Progressive Fusion appendix C ("FB", "HEALTH", "TECH"), alphabetical.
GROUPS: dict[str, tuple[str, ...]] = {
    "fnb": ("CAG", "CPB", "DRI", "GIS", "HRL", "HSY", "K", "MCD", "MKC", "SBUX", "SJM", "TSN", "YUM"),
    "health": ("ABT", "CVS", "GSK", "MCK", "MRK", "NVS", "PFE", "TFX", "UNH", "WBA", "WST"),
    "tech": ("AAPL", "ADBE", "AMD", "AMZN", "GOOG", "HPQ", "IBM", "INTC", "MSFT", "MSI", "NVDA", "ORCL", "QCOM",
             "ZBRA"),
}
#: MultiBench's window, its split sizes in windows, and its F&B example's target.
WINDOW, TRAIN_WINDOWS, VALID_WINDOWS, TARGET = 500, 3200, 500, "MCD"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Built:
    """The constructed corpus: aligned days, normalised returns, targets and the split boundaries."""

    groups: dict[str, tuple[str, ...]]
    dates: np.ndarray  # [T - 1] str, date of each return
    returns: np.ndarray  # [T - 1, n] float32, normalised
    targets: np.ndarray  # [M] float32, normalised
    bounds: dict[str, tuple[int, int]]  # split -> [first, end) window
    repairs: dict[str, list[str]]  # split -> reason per repair event
    report: dict[str, Any]


def _groups(groups: dict[str, list[str]] | None) -> dict[str, tuple[str, ...]]:
    chosen = GROUPS if groups is None else {g: tuple(sorted(t)) for g, t in groups.items()}
    if not chosen or any(not g.isalnum() or not g.islower() or not t for g, t in chosen.items()):
        raise ConfigError(f"{NAME}: groups must map lower-case alphanumeric names to ticker lists, got {groups}")
    return chosen


def _paths(root: str | Path, groups: dict[str, tuple[str, ...]]) -> dict[str, Path]:
    base = require_root(root, NAME)
    paths = {t: base / f"{t}.csv" for tickers in groups.values() for t in tickers}
    missing = sorted(t for t, p in paths.items() if not p.is_file())
    if missing:
        raise ConfigError(f"{NAME}: no CSV for {missing} under {base} (expected <TICKER>.csv in Yahoo's schema); "
                          f"download them or drop them from corpora.{NAME}.reader.groups")
    return paths


def _check_no_lookahead(window: int, train: int, first_valid_target: int) -> None:
    """Normalisation reads returns up to index window + train - 1 and targets up to train - 1 only."""
    if window + train - 1 >= window + first_valid_target or train > first_valid_target:
        raise AssertionError("normalisation statistics would read a validation target (look-ahead)")


def _split_bounds(returns: int, window: int, train: int, valid: int) -> dict[str, tuple[int, int]]:
    windows = returns - window
    if train < 1 or valid < 1 or windows - train - valid < 1:
        raise ConfigError(f"{NAME}: {returns} aligned returns give {max(windows, 0)} windows of {window} days, "
                          f"too few for train_windows {train} + valid_windows {valid} + one test window; lower "
                          f"them (or window) in corpora.{NAME}.reader, or bring a longer history")
    return {"train": (0, train), "valid": (train, train + valid), "test": (train + valid, windows)}


def _owner(day: int, bounds: dict[str, tuple[int, int]], window: int) -> str:
    """The split owning aligned day ``day`` (an Open index): the split of the target it ends up in."""
    for split in SPLITS:
        if day <= bounds[split][1] - 1 + window + 1:  # the Open that closes the split's last target return
            return split
    return "test"


@lru_cache(maxsize=4)
def _build_cached(root: str, key: tuple, stamp: tuple) -> Built:
    options = dict(key)
    groups = _groups(options["groups"] and {g: list(t) for g, t in options["groups"]})
    paths = _paths(root, groups)
    try:
        prices = {t: read_prices(p) for t, p in paths.items()}
        days, opens, report = align(prices, rule=options["align"], start=options["start"], end=options["end"])
    except ValueError as exc:
        raise ConfigError(f"{NAME}: {exc}") from None
    tickers = [t for ts in groups.values() for t in ts]
    if options["target"] not in tickers:
        raise ConfigError(f"{NAME}: target {options['target']!r} is not among the tickers {tickers}")
    window, returns = options["window"], log_returns(opens)
    bounds = _split_bounds(len(returns), window, options["train_windows"], options["valid_windows"])
    targets = returns[window:, tickers.index(options["target"])] ** 2
    train = options["train_windows"]
    _check_no_lookahead(window, train, bounds["valid"][0])
    scale_x, scale_y = np.std(returns[:window + train]), np.std(targets[:train])
    if not scale_x > 0 or not scale_y > 0:
        raise ConfigError(f"{NAME}: constant prices in the training span; nothing to normalise by")
    repairs: dict[str, list[str]] = {s: [] for s in SPLITS}
    for day, reason in repair_events(prices, days, options["align"]):
        repairs[_owner(int(np.searchsorted(days, day)), bounds, window)].append(reason)
    report.update(target=options["target"], window=window, scale_returns=float(scale_x),
                  scale_target=float(scale_y), windows={s: b[1] - b[0] for s, b in bounds.items()})
    return Built(groups, days[1:].astype(str), (returns / scale_x).astype(np.float32),
                 (targets / scale_y).astype(np.float32), bounds, repairs, report)


def _build(root: str | Path, options: dict[str, Any]) -> Built:
    """The construction for ``root`` and the reader options (cached while the CSVs are unchanged)."""
    full = {"window": WINDOW, "train_windows": TRAIN_WINDOWS, "valid_windows": VALID_WINDOWS, "target": TARGET,
            "align": "ffill", "start": None, "end": None, "groups": None, **options}
    if full["window"] < 1:
        raise ConfigError(f"{NAME}: window must be >= 1, got {full['window']}")
    groups = full["groups"]
    full["groups"] = None if groups is None else tuple((g, tuple(t)) for g, t in sorted(groups.items()))
    paths = _paths(root, _groups(groups))
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
    return _build_cached(str(Path(root).resolve()), tuple(sorted(full.items())), stamp)


def alignment_report(root: str | Path, **options: Any) -> dict[str, Any]:
    """Per-ticker parse and alignment counts plus span, target, scales and windows per split (a copy)."""
    return dict(_build(root, options).report)


def features(root: str | Path, **options: Any) -> Features:
    """One ``series_<group>`` field per group ([days, tickers] stored, [window, tickers] read), dates, label."""
    built = _build(root, options)
    out: Features = {f"series_{g}": Field(
        "float32", (None, len(t)), "arrow",
        description=f"log returns of Open, [day, ticker] (an Arrow table, one row per day), tickers "
                    f"{', '.join(t)}; divided by the training std "
                    f"{built.report['scale_returns']:.6g} (one scalar, MultiBench)") for g, t in built.groups.items()}
    out["meta_dates"] = Field("str", (None,), "json", description="date (YYYY-MM-DD) of each return row")
    out["label"] = Field("float32", (None,), "npy",
                         description=f"next-day squared log return of {built.report['target']} after each window, "
                                     f"divided by the training std {built.report['scale_target']:.6g}")
    return out


def sources(root: str | Path, *, groups: dict[str, list[str]] | None = None, **options: Any) -> list[Path]:
    """The CSV of every ticker."""
    return list(_paths(root, _groups(groups)).values())


def describe(root: str | Path, **options: Any) -> str:
    """Layout, span, alignment and repairs in words (goes into the manifest's source record)."""
    report = _build(root, options).report
    dropped = Counter()
    for stats in report["tickers"].values():
        dropped.update(stats["dropped"])
    fill = "filled" if report["rule"] == "ffill" else "unshared"
    per_ticker = {t: s[fill] for t, s in report["tickers"].items() if s[fill]}
    return (f"Yahoo daily CSVs, {len(report['tickers'])} tickers, target {report['target']}, window "
            f"{report['window']}; aligned {report['span'][0]}..{report['span'][1]}: {report['days']} days "
            f"(rule {report['rule']}, span limited by {report['limited_by'] or 'none'}); {fill} days per ticker "
            f"{per_ticker}; dropped rows {dict(dropped)}; windows {report['windows']}")


def view(root: str | Path, *, window: int = WINDOW, groups: dict[str, list[str]] | None = None,
         **options: Any) -> View:
    """Windows of ``window`` days over every ``series_<group>`` field and ``meta_dates``."""
    return View("window", (*(f"series_{g}" for g in _groups(groups)), "meta_dates"), length=window)


def iter_samples(root: str | Path, split: str, *, window: int = WINDOW, train_windows: int = TRAIN_WINDOWS,
                 valid_windows: int = VALID_WINDOWS, target: str = TARGET, align: str = "ffill",
                 start: str | None = None, end: str | None = None,
                 groups: dict[str, list[str]] | None = None) -> Iterator[Sample | Skip]:
    """The split's aligned series as one stored sample whose ``__rows__`` are its windows.

    Args:
        root: folder of ``<TICKER>.csv`` files.
        split: "train", "valid" or "test" (time-ordered).
        window: days per window (MultiBench 500).
        train_windows, valid_windows: windows in train and valid; test takes the rest.
        target: ticker whose next-day squared log return is the label.
        align: "ffill" or "intersect" (see :mod:`mmdata.modalities.series`).
        start, end: optional ``YYYY-MM-DD`` bounds (MultiBench downloads 2000-06-01 .. 2021-02-28).
        groups: group -> tickers (default :data:`GROUPS`); each group becomes field ``series_<group>``.

    Yields:
        One sample ``stocks/<split>/series`` with the fields of :func:`features`, ``__rows__`` ``{"id":
        "w<start:05d>", "label", "start"}`` (start relative to the stored series) and ``__repairs__``.
    """
    if split not in SPLITS:
        raise ConfigError(f"{NAME}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    options = {"window": window, "train_windows": train_windows, "valid_windows": valid_windows,
               "target": target, "align": align, "start": start, "end": end, "groups": groups}
    built = _build(root, options)
    first, end_window = built.bounds[split]
    days = slice(first, end_window - 1 + window)  # every return a window of the split reads
    sample: Sample = {"__key__": make_key(NAME, split, "series"), SOURCE: str(root),
                      "meta_dates": built.dates[days].tolist(), "label": built.targets[first:end_window],
                      REPAIRS: built.repairs[split]}
    column = 0
    for group, tickers in built.groups.items():
        sample[f"series_{group}"] = np.ascontiguousarray(built.returns[days, column:column + len(tickers)])
        column += len(tickers)
    sample[ROWS] = [{"id": f"w{i:05d}", "label": float(built.targets[i]), "start": i - first}
                    for i in range(first, end_window)]
    yield sample


def count_raw(root: str | Path, split: str, **options: Any) -> RawCount:
    """Windows of one split, from the aligned Open prices of the CSVs (the samples themselves are not built).

    Windows are MultiBench's unit (train 3200 / valid 500 / test the rest at its defaults) and the split's index
    rows: one stored series per split holds them all, so the count reconciles with the manifest's ``rows``.
    CSVs of tickers outside ``groups`` are never read; they count as ``ignored`` files, with the OS clutter.

    Args:
        root, split, options: as for :func:`iter_samples`.
    """
    built = _build(root, options)
    first, end = built.bounds[check_split(NAME, split, SPLITS)]
    count = raw_count(end - first, "window", [Path(root)], rows=True)
    tickers = {t for group in built.groups.values() for t in group}
    outside = sum(1 for path in Path(root).glob("*.csv") if path.stem not in tickers)
    return replace(count, ignored=count.ignored + outside)


CORPUS = Corpus(
    name=NAME,
    splits=SPLITS,
    task="forecast",
    features=features,
    iter_samples=iter_samples,
    sources=sources,
    describe=describe,
    count_raw=count_raw,
    view=view,
)
