"""6.9 Stock CSVs: the row rules of mmdata.modalities.series.read_prices and the reader's universe, on hand-written
Yahoo-schema files."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmdata.modalities.series import read_prices

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _days(n: int, start: str = "2001-01-02") -> list[str]:
    return [str(np.datetime64(start) + i) for i in range(n)]


def _rows(n: int) -> list[str]:
    return [f"{day},{10 + i:.2f},1,1,1,1,100" for i, day in enumerate(_days(n))]


def test_csv_06_a_footer_line_is_dropped_and_counted_not_parsed(tmp_path):
    """CSV-06: a trailing footer (one cell, or text in the date column) is a counted dropped row, and the
    ledger rows == kept + dropped holds."""
    prices = read_prices(_csv(tmp_path / "A.csv", [*_rows(60), "Data provided by Yahoo", "Total,,,,,,"]))
    assert dict(prices.dropped) == {"malformed_row": 1, "bad_date": 1}
    assert prices.rows == 62 == len(prices.dates) + sum(prices.dropped.values())


def test_csv_08_non_positive_prices_are_dropped_and_counted(tmp_path):
    """CSV-08 (partly): an Open of 0 or below is dropped as ``non_positive_price`` (a log return needs it
    positive); split-adjustment jumps are not detected."""
    rows = _rows(60)
    rows[10] = rows[10].replace(",20.00,", ",-20.00,")
    rows[20] = rows[20].replace(",30.00,", ",0,")
    prices = read_prices(_csv(tmp_path / "A.csv", rows))
    assert dict(prices.dropped) == {"non_positive_price": 2} and (prices.opens > 0).all()
    assert np.datetime64(_days(60)[10]) not in prices.dates


def test_csv_04_time_and_zone_suffixes_keep_the_trading_day(tmp_path):
    """CSV-04 (partly): daily bars: a time or UTC offset after the date is ignored, so mixed suffixes give the
    same calendar (no shift by a zone conversion); a date that is not YYYY-MM-DD is dropped, counted."""
    rows = _rows(60)
    rows[1] = rows[1].replace(_days(60)[1], _days(60)[1] + " 00:00:00-05:00")
    rows[2] = rows[2].replace(_days(60)[2], _days(60)[2] + "T23:30:00+09:00")
    rows[3] = rows[3].replace(_days(60)[3], "01/05/2001")
    prices = read_prices(_csv(tmp_path / "A.csv", rows))
    assert list(prices.dates[:3].astype(str)) == _days(60)[:3]
    assert dict(prices.dropped) == {"bad_date": 1}


def test_csv_03_a_semicolon_delimited_file_fails_naming_it(tmp_path):
    """CSV-03: a semicolon-delimited export (European decimal commas) is a format error naming the file, not
    a file of dropped rows (decimal commas in a comma file: tests/test_stocks.py, naming the line)."""
    rows = [f"{day};{10 + i},50;1;1;1;1;100" for i, day in enumerate(_days(40))]
    path = tmp_path / "EU.csv"
    path.write_text("Date;Open;High;Low;Close;Adj Close;Volume\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"EU\.csv.*lacks Date and Open"):
        read_prices(path)


def test_csv_05_files_outside_the_configured_universe_are_never_read(tmp_path):
    """CSV-05: the reader opens ``<TICKER>.csv`` for the configured tickers only; a stray CSV of an unknown
    symbol changes nothing read and is counted as an ``ignored`` file (outside raw = written + skipped)."""
    from mmdata.corpora import stocks
    from mmdata.synth.stocks import generate

    root = generate(tmp_path / "raw", seed=0, days=120)
    options = {"window": 10, "train_windows": 40, "valid_windows": 10}
    before = next(stocks.iter_samples(root, "train", **options))
    counted = stocks.count_raw(root, "train", **options)
    _csv(root / "ZZZZ.csv", _rows(120))
    after = next(stocks.iter_samples(root, "train", **options))
    assert all(np.array_equal(before[k], after[k]) for k in before if k.startswith("series_"))
    assert "ZZZZ" not in stocks.describe(root, **options)
    assert stocks.count_raw(root, "train", **options) == replace(counted, ignored=counted.ignored + 1)
    dropped = {"groups": {"tech": ["AAPL", "MSFT"], "fnb": ["MCD", "SBUX"]}, **options}  # a smaller universe
    assert stocks.count_raw(root, "train", **dropped).ignored == len(list(root.glob("*.csv"))) - 4
