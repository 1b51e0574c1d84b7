"""Stocks: Yahoo-schema CSVs, parse and alignment rules with reconciled counts, MultiBench's construction
against a naive re-implementation, no look-ahead, windows cut at read time, bad input, and the signal."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mmdata
from mmdata.corpora import stocks
from mmdata.corpora.check import check_sample
from mmdata.errors import ConfigError
from mmdata.modalities.series import align, read_prices
from mmdata.shards.build import shard_corpus
from mmdata.synth.stocks import HEADER, generate

DAYS, WINDOW, TRAIN, VALID = 160, 20, 80, 20
OPTIONS = {"window": WINDOW, "train_windows": TRAIN, "valid_windows": VALID}
TICKERS = [t for group in stocks.GROUPS.values() for t in group]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("stocks") / "stocks", seed=0, days=DAYS)


@pytest.fixture(scope="module")
def shards(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stocks_shards") / "stocks"
    shard_corpus("stocks", root, out, reader=OPTIONS, max_samples=1, progress=False)
    return out


def _copy(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest


def test_layout_is_one_yahoo_csv_per_ticker(root):
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{t}.csv" for t in TICKERS)
    lines = (root / "MCD.csv").read_text().splitlines()
    assert lines[0] == HEADER == "Date,Open,High,Low,Close,Adj Close,Volume" and len(lines) == DAYS + 1
    assert "null" in (root / "HSY.csv").read_text()
    assert [len(g) for g in stocks.GROUPS.values()] == [13, 11, 14]  # Progressive Fusion appendix C
    assert {"MCD", "SBUX", "HSY", "HRL"} <= set(stocks.GROUPS["fnb"])  # MultiBench's example lists
    assert {"MRK", "WST", "CVS", "MCK", "ABT", "UNH", "TFX"} <= set(stocks.GROUPS["health"])
    assert {"AAPL", "MSFT", "AMZN", "INTC", "AMD", "MSI"} <= set(stocks.GROUPS["tech"])


def test_parse_counts_reconcile_per_ticker(root):
    for ticker in TICKERS:
        prices = read_prices(root / f"{ticker}.csv")
        assert prices.rows == len(prices.dates) + sum(prices.dropped.values()), ticker
        assert np.all(np.diff(prices.dates).astype(int) > 0)
    assert read_prices(root / "HSY.csv").dropped == {"no_data_row": 1}
    assert read_prices(root / "AAPL.csv").dropped == {"duplicate_date": 1}
    assert read_prices(root / "ZBRA.csv").unsorted


@pytest.mark.parametrize("rule", ["ffill", "intersect"])
def test_alignment_report_reconciles_and_names_the_short_history(root, rule):
    report = stocks.alignment_report(root, align=rule, **OPTIONS)
    assert report["limited_by"] == ["GOOG"] and report["span"][0] == report["tickers"]["GOOG"]["first"]
    extra = "filled" if rule == "ffill" else "unshared"
    for ticker, stats in report["tickers"].items():
        in_span = stats["kept"] - stats["trimmed"]
        assert stats["rows"] == stats["kept"] + sum(stats["dropped"].values())
        assert report["days"] == (in_span + stats[extra] if rule == "ffill" else in_span - stats[extra]), ticker
    assert report["tickers"]["MCD"]["trimmed"] == 15 and report["tickers"]["GOOG"]["trimmed"] == 0
    if rule == "ffill":
        assert {t: s["filled"] for t, s in report["tickers"].items() if s["filled"]} == {"HSY": 1, "NVDA": 2}
    else:
        assert report["days"] == DAYS - 15 - 3  # the HSY null day and the two NVDA gaps are dropped for all


def _naive(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """MultiBench's construction written out directly (ffill alignment done by hand) on the CSVs."""
    table = {}
    for ticker in TICKERS:
        for line in (root / f"{ticker}.csv").read_text().splitlines()[1:]:
            day, value = line.split(",")[:2]
            if value != "null":
                table.setdefault(ticker, {}).setdefault(day, float(value))
    days = sorted(d for d in set().union(*table.values()) if d >= min(table["GOOG"]))
    opens = np.empty((len(days), len(TICKERS)))
    for j, ticker in enumerate(TICKERS):
        last = None
        for i, day in enumerate(days):
            last = table[ticker].get(day, last)
            opens[i, j] = last
    rx = np.diff(np.log(opens), axis=0)
    y = rx[WINDOW:, TICKERS.index("MCD")] ** 2
    return rx / np.std(rx[:WINDOW + TRAIN]), y / np.std(y[:TRAIN])


def test_construction_matches_a_naive_multibench_reimplementation(root):
    rx, y = _naive(root)
    windows = len(rx) - WINDOW
    features = stocks.features(root, **OPTIONS)
    for split, (first, end) in {"train": (0, TRAIN), "valid": (TRAIN, TRAIN + VALID),
                                "test": (TRAIN + VALID, windows)}.items():
        sample = next(stocks.iter_samples(root, split, **OPTIONS))
        assert sample["__key__"] == f"stocks/{split}/series"
        check_sample({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}, features)
        series = np.concatenate([sample[f"series_{g}"] for g in stocks.GROUPS], axis=1)
        np.testing.assert_allclose(series, rx[first:end - 1 + WINDOW], rtol=1e-5, atol=1e-6)
        rows = sample["__rows__"]
        assert [r["id"] for r in rows] == [f"w{i:05d}" for i in range(first, end)]
        np.testing.assert_allclose([r["label"] for r in rows], y[first:end], rtol=1e-5)
        assert len(sample["meta_dates"]) == len(series)


def test_changing_later_prices_changes_no_training_statistic(tmp_path, root):
    moved = _copy(root, tmp_path / "moved")
    lines = (moved / "MCD.csv").read_text().splitlines()
    fields = lines[-5].split(",")
    fields[1] = f"{float(fields[1]) * 10:.6f}"  # a test-period Open jumps tenfold
    lines[-5] = ",".join(fields)
    (moved / "MCD.csv").write_text("\n".join(lines) + "\n")
    before, after = (next(stocks.iter_samples(r, "train", **OPTIONS)) for r in (root, moved))
    assert stocks.alignment_report(moved, **OPTIONS)["scale_target"] == \
        stocks.alignment_report(root, **OPTIONS)["scale_target"]
    np.testing.assert_array_equal(before["series_fnb"], after["series_fnb"])
    assert [r["label"] for r in before["__rows__"]] == [r["label"] for r in after["__rows__"]]


def test_windows_are_cut_at_read_time_and_match_the_stored_series(shards, root):
    loader = mmdata.load(shards, "train", batch_size=7, shuffle=False)
    assert loader.features["series_tech"].shape == (WINDOW, 14) and loader.features["label"].shape == ()
    batch = next(iter(loader))
    sample = next(stocks.iter_samples(root, "train", **OPTIONS))
    assert batch["series_fnb"].shape == (7, WINDOW, 13) and batch["series_fnb"].dtype == torch.float32
    np.testing.assert_array_equal(batch["series_fnb"][3].numpy(), sample["series_fnb"][3:3 + WINDOW])
    assert batch["meta_dates"][3] == sample["meta_dates"][3:3 + WINDOW]
    assert batch["__key__"][3] == "stocks/train/series/w00003"
    np.testing.assert_allclose(batch["label"].numpy(), [r["label"] for r in sample["__rows__"][:7]], rtol=1e-6)
    assert len(mmdata.load(shards, "test", batch_size=1000)) == 1
    one = next(iter(mmdata.load(shards, "valid", fields=["series_health", "label"], batch_size=4)))
    assert set(one) == {"__key__", "series_health", "label"}  # view fields not asked for are not read
    assert stocks.CORPUS.view_for(root, window=7).length == 7  # the View follows the reader option


def _series_bytes(root: Path, out: Path, **options: int) -> int:
    manifests = shard_corpus("stocks", root, out, reader=options, max_samples=1, progress=False)
    return sum(s["bytes"] for m in manifests.values() for s in m["shards"])


def test_shard_bytes_grow_with_days_not_days_times_window(tmp_path):
    short, long = (generate(tmp_path / f"raw{d}", seed=0, days=d) for d in (200, 400))
    size = {(d, w): _series_bytes(r, tmp_path / f"s{d}-{w}", window=w, train_windows=60, valid_windows=20)
            for d, r in ((200, short), (400, long)) for w in (20, 60)}
    per_day = 38 * 4 + 12  # float32 per ticker plus the date string
    assert size[(400, 20)] - size[(200, 20)] == pytest.approx(200 * per_day, rel=0.3)  # + days: + bytes
    assert size[(200, 60)] - size[(200, 20)] < 3 * 40 * per_day * 1.3  # + window: only 3 splits' history
    windows = 400 - 1 - 15 - 20  # GOOG's late start trims 15 days
    assert size[(400, 20)] < 0.1 * windows * 20 * 38 * 4  # far below storing every window


def test_series_are_arrow_tables_any_pyarrow_reader_opens(shards):
    import tarfile

    import pyarrow as pa

    loader = mmdata.load(shards, "train", fields=["series_tech"], batch_size=1, shuffle=False)
    assert loader.shards.features["series_tech"].codec == "arrow"
    with tarfile.open(sorted((shards / "train").glob("*.tar"))[0]) as tar:
        info = next(m for m in tar.getmembers() if m.name.endswith(".series_tech.arrow"))
        table = pa.ipc.open_stream(tar.extractfile(info).read()).read_all()
    column = table.column("values").combine_chunks()  # one row per day: a list of one value per ticker
    stored = column.flatten().to_numpy().reshape(len(column), -1)  # [days, tickers]
    window = next(iter(loader))["series_tech"][0].numpy()  # the first window, cut at read time
    np.testing.assert_array_equal(window, stored[:len(window)])


def test_split_repairs_follow_their_dates_and_reach_the_manifest(shards, root):
    from mmdata.shards.manifest import read_manifest

    repairs = {split: read_manifest(shards / split)["report"]["repairs"] for split in stocks.SPLITS}
    total = {}
    for counts in repairs.values():
        for reason, n in counts.items():
            total[reason] = total.get(reason, 0) + n
    assert total == {"no_data_row": 1, "forward_filled": 3, "duplicate_date": 1, "unsorted": 1}
    assert "limited by ['GOOG']" in read_manifest(shards / "train")["source"]["release"]


def test_bad_csvs_fail_or_are_counted(tmp_path, root):
    bad = _copy(root, tmp_path / "bad")
    path = bad / "CAG.csv"
    rows = path.read_text().splitlines()
    comma = [",".join([r.split(",")[0], '"' + r.split(",")[1].replace(".", ",") + '"', *r.split(",")[2:]])
             for r in rows[1:40]]  # decimal commas: "199,268817"
    path.write_text("\n".join([rows[0], *comma, *rows[40:]]) + "\n")
    with pytest.raises(ConfigError, match=r"CAG\.csv.*line 2"):
        stocks.features(bad, **OPTIONS)
    path.write_text("\ufeff" + "\n".join(rows) + "\n")  # a BOM is harmless
    assert stocks.features(bad, **OPTIONS)["series_fnb"].shape == (None, 13)
    (bad / "CAG.csv").write_text("Day,Price\n2001-01-02,3.0\n")
    with pytest.raises(ConfigError, match="lacks Date and Open"):
        stocks.features(bad, **OPTIONS)
    (bad / "CAG.csv").unlink()
    with pytest.raises(ConfigError, match=r"no CSV for \['CAG'\]"):
        stocks.features(bad, **OPTIONS)
    with pytest.raises(ConfigError, match="target"):
        stocks.features(root, **{**OPTIONS, "target": "XOM"})
    with pytest.raises(ConfigError, match="train_windows"):
        stocks.features(root, **{**OPTIONS, "train_windows": 500})


def test_many_yahoo_null_days_are_dropped_rows_not_a_format_error(tmp_path, root):
    """Yahoo writes ``null`` on days without data; a thinly traded ticker may have many. They are counted
    ``no_data_row`` drops (forward-filled by the alignment), never the "check the delimiter" format error."""
    bad = _copy(root, tmp_path / "nulls")
    path = bad / "CAG.csv"
    rows = path.read_text().splitlines()
    nulls = [r.split(",")[0] + ",null,null,null,null,null,null" if i % 5 == 0 else r for i, r in enumerate(rows[1:])]
    path.write_text("\n".join([rows[0], *nulls]) + "\n")
    prices = read_prices(path)
    assert prices.dropped == {"no_data_row": sum(1 for r in nulls if ",null," in r)}
    assert prices.dropped["no_data_row"] > 0.05 * prices.rows  # more than MAX_BAD_ROWS, still read
    assert stocks.features(bad, **OPTIONS)["series_fnb"].shape == (None, 13)


def test_align_rejects_disjoint_histories_and_unknown_rules(root):
    mcd = read_prices(root / "MCD.csv")
    late = read_prices(root / "MCD.csv")
    late.dates = late.dates + 10_000
    with pytest.raises(ValueError, match="overlap"):
        align({"A": mcd, "B": late})
    with pytest.raises(ValueError, match="align rule"):
        align({"A": mcd}, rule="nearest")


def test_signal_needs_health_and_tech_together(root):
    sample = next(stocks.iter_samples(root, "train", **OPTIONS))
    last = np.arange(TRAIN) + WINDOW - 1  # the last day of each window
    y = np.log(np.array([r["label"] for r in sample["__rows__"]]))
    fits = {}
    for groups in (("fnb",), ("health",), ("tech",), ("health", "tech")):
        x = np.stack([sample[f"series_{g}"][last].mean(axis=1) for g in groups] + [np.ones(TRAIN)], axis=1)
        residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        fits[groups] = 1 - residual.var() / y.var()
    assert fits[("health", "tech")] > 0.6 > max(fits[("health",)], fits[("tech",)]) > 0.15 > fits[("fnb",)]
