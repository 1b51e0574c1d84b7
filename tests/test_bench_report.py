"""bench/report.py and the peer loaders: decoders given to webdataset decode exactly, rows adapt, failures show."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import peer_loaders as pl  # noqa: E402
import report  # noqa: E402
import report_rows as rr  # noqa: E402


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(3, 4),
                                   np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
                                   np.zeros((0, 5), np.uint8), np.float64(2.5)])
def test_zero_copy_npy_handler_equals_np_load(array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    got = pl.npy_zero_copy("feat.npy", buf.getvalue())
    np.testing.assert_array_equal(got, np.load(io.BytesIO(buf.getvalue())))
    assert got.dtype == array.dtype and got.shape == np.shape(array)
    assert pl.npy_zero_copy("label.cls", b"1") is None  # other members go to webdataset's own handlers


@pytest.mark.parametrize("image", [np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8),
                                   np.random.default_rng(1).integers(0, 60000, (6, 5), dtype=np.uint16)])
def test_pil_and_cv2_handlers_agree_on_png(image: np.ndarray) -> None:
    import cv2

    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    data = cv2.imencode(".png", np.ascontiguousarray(bgr))[1].tobytes()
    for handler in (pl.image_pil, pl.image_cv2):
        np.testing.assert_array_equal(handler("image.png", data), image)


def test_wds_variants_cover_each_codec_option(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"codecs": {"a": "npy", "b": "jpg", "c": "txt"}}')
    assert len(pl.wds_variants(tmp_path)) == 4
    (tmp_path / "manifest.json").write_text('{"codecs": {"c": "txt"}}')
    assert pl.wds_variants(tmp_path) == ["default"]


def test_a_failing_or_missing_section_is_reported_not_dropped() -> None:
    def broken() -> list[dict]:
        raise ValueError("boom")

    rows, _ = report.run_section("write", broken)
    assert rows[0]["status"].startswith("not measured: ValueError: boom")
    rows, _ = report.run_section("write", lambda: report._call("no_such_bench_module"))
    assert rows == [{"section": "write", "status": "not measured: module no_such_bench_module not found"}]
    rows, _ = report.run_section("write", lambda: [])
    assert "no rows" in rows[0]["status"]


def test_generic_rows_take_the_first_ratio_and_judge_the_goal() -> None:
    rows = rr.generic("write", [{"case": "2 processes", "speedup_ratio": 1.9, "goal": 1.8},
                                {"case": "ceiling", "ceiling_ratio": 0.5}])
    assert [(r["name"], r["ratio"], r["met"]) for r in rows] == [("2 processes", 1.9, True), ("ceiling", 0.5, None)]
    assert rr.generic("write", [{"case": "x"}])[0]["status"].startswith("not measured")


def test_write_rows_judge_the_engine_and_show_the_machines_own_ceiling_beside_it() -> None:
    common = {"corpus": "avmnist-like", "samples": 100}
    rows = rr.write([{**common, "what": "encode_ceiling", "processes": 1, "samples_per_s": 1000.0},
                     {**common, "what": "write_split", "processes": 1, "samples_per_s": 100.0,
                      "ratio_to_ceiling_per_core": 0.1, "ratio_to_checked_ceiling_per_core": 0.5, "speedup_vs_1": 1.0,
                      "identical": True},
                     {**common, "what": "write_split", "processes": 2, "samples_per_s": 150.0,
                      "ratio_to_ceiling_per_core": 0.075, "speedup_vs_1": 1.5, "identical": False},
                     {**common, "what": "independent_parts", "processes": 2, "samples_per_s": 160.0,
                      "speedup_vs_1": 1.6}])
    got = [(r["name"], r["ratio"], r["met"]) for r in rows]
    assert got == [("avmnist-like 100 samples, 1 proc / core", 0.1, False),
                   ("avmnist-like 100 samples, 1 proc / core, checked", 0.5, None),
                   ("avmnist-like 100 samples, 2 proc / core", 0.075, False),
                   ("avmnist-like 100 samples, 2 proc", 1.5, False),
                   ("2 independent 1-proc writes of 1/2 each, at once", 1.6, None)]
    assert rows[1]["ref"] == 200.0 and rows[4]["goal"] is None and "0.94 of it" in rows[4]["note"]
    assert "OUTPUT BYTES DIFFER" in rows[3]["note"]


def test_report_writes_json_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"peers": lambda: [rr.row("peers", "avmnist", 2.0, 1.0, 2.0, "webdataset", 1.0)],
            "write": lambda: [rr.missing("write", "module write_speed not found")]}
    monkeypatch.setattr(report, "sections", lambda quick, work: fake)
    assert report.main(["--out", str(tmp_path)]) == 0
    saved = (tmp_path / "report.json").read_text()
    assert '"cpu"' in saved and "not measured: module write_speed" in saved
    assert (tmp_path / "report.png").stat().st_size > 0


def test_write_and_sampler_rows_are_oriented_higher_is_better() -> None:
    rows = rr.write([{"what": "encode_ceiling", "samples_per_s": 100.0},
                     {"what": "write_split", "corpus": "c", "samples": 10, "processes": 1, "samples_per_s": 90.0,
                      "ratio_to_ceiling_per_core": 0.9, "speedup_vs_1": 1.0, "identical": True},
                     {"what": "write_split", "corpus": "c", "samples": 10, "processes": 2, "samples_per_s": 150.0,
                      "ratio_to_ceiling_per_core": 0.75, "speedup_vs_1": 1.67, "identical": True}])
    assert [(r["ratio"], r["goal"], r["met"]) for r in rows] == [(0.9, 0.8, True), (0.75, 0.8, False),
                                                                 (1.67, 1.8, False)]
    rows = rr.samplers([{"name": "load batch (mmdata.load)", "batch": 32, "seconds": 0.01, "ratio": 1.0},
                        {"name": "marginal_permute", "batch": 32, "seconds": 0.0002, "ratio": 0.02},
                        {"name": "gather inputs", "batch": 32, "seconds": 0.005, "ratio": 0.5, "bytes": 10,
                         "gbps": 1.0}])
    assert [(r["name"], r["ratio"], r["met"]) for r in rows] == [("marginal_permute b32", 50.0, True),
                                                                 ("gather inputs b32", 2.0, None)]


def test_a_whole_release_gets_its_own_speedup_row() -> None:
    """shard_corpus rows (reading, fingerprint and manifests included): 2 vs 1 process, judged against 1.8x."""
    common = {"what": "shard_corpus", "corpus": "avmnist release", "samples": 1100, "identical": True}
    rows = rr.write([{"what": "encode_ceiling", "samples_per_s": 1000.0},
                     {**common, "processes": 1, "samples_per_s": 100.0, "speedup_vs_1": 1.0},
                     {**common, "processes": 2, "samples_per_s": 190.0, "speedup_vs_1": 1.9, "identical": False}])
    assert [(r["name"], r["ours"], r["ref"], r["ratio"], r["met"]) for r in rows] == \
        [("avmnist release 1100 raw items, shard_corpus 2 proc", 190.0, 100.0, 1.9, True)]
    assert "OUTPUT BYTES DIFFER" in rows[0]["note"]
