"""``mmdata verify``: the corpus record, the index against the tars, and the ledger against the raw source.

Each tampering test copies a small sharded corpus and changes one thing: a deleted split, a flipped label in
index.parquet, two rows' crc32 exchanged, an edited manifest, a missing record, a raw item removed after sharding.
Every corpus's synthetic mini must verify cleanly against its own source (``--source``).
"""
from __future__ import annotations

import inspect
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmdata.cli import main
from mmdata.corpora import CORPORA, get_corpus
from mmdata.corpora.base import IGNORED_NAMES, RawCount
from mmdata.errors import LedgerError, ShardIntegrityError
from mmdata.shards.build import shard_corpus
from mmdata.shards.manifest import INDEX, MANIFEST, read_manifest
from mmdata.shards.reconcile import check_ledger, check_source_count
from mmdata.shards.record import RECORD, is_mmdata_output, read_corpus_record, write_corpus_record
from mmdata.shards.verify import verify, verify_split
from mmdata.synth import SYNTHS

#: Smallest synthetic sizes and reader options per corpus (crema_d keeps its broken clips: a ledger with skips).
MINIS: dict[str, tuple[dict, dict]] = {
    "avmnist": ({"train": 24, "test": 10}, {}),
    "mosi": ({"train": 6, "valid": 3, "test": 3}, {}),
    "mosei": ({"train": 6, "valid": 3, "test": 3}, {}),  # the SDK release: counts opinion segments
    "crema_d": ({"actors": 12, "sentences": 2}, {"image_size": 32}),
    "mmimdb": ({"train": 8, "valid": 4, "test": 4}, {"image_size": 32}),
    "hateful_memes": ({"train": 8, "valid": 3, "test": 4, "unseen": 3}, {"image_size": 32}),
    "snli_ve": ({"train": 6, "valid": 3, "test": 3, "size": 32, "no_gold": 0.3}, {"image_size": 32}),
    "nyuv2": ({"train": 10, "test": 5, "height": 30, "width": 40}, {}),
    "stocks": ({"days": 160}, {"window": 20, "train_windows": 80, "valid_windows": 20}),
    "sunrgbd": ({"train": 10, "test": 4}, {"num_points": 256, "min_points": 64, "max_boxes": 8}),
}
SKIP_BUDGET = 0.6


def ensure_record(out: Path, name: str) -> None:
    """Write the corpus record unless the build already did (it does once build.py publishes it)."""
    if not (out / RECORD).exists():
        write_corpus_record(out, name, list(get_corpus(name).splits))


def shard(name: str, root: Path, out: Path) -> dict[str, dict]:
    manifests = shard_corpus(name, root, out, reader=MINIS[name][1], max_samples=4,
                             max_skip_fraction=SKIP_BUDGET, progress=False)
    ensure_record(out, name)
    return manifests


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    """corpus -> (raw root, finished shard output), built once per module on first use."""
    base, built = tmp_path_factory.mktemp("verify"), {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in built:
            root = SYNTHS[name](base / "raw" / name, seed=0, **MINIS[name][0])
            shard(name, root, base / "shards" / name)
            built[name] = (root, base / "shards" / name)
        return built[name]
    return get


def copy_of(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / path.name
    shutil.copytree(path, target)
    return target


def rewrite_index(split_dir: Path, change: Callable[[dict[str, list]], None]) -> dict[str, list]:
    """Rewrite index.parquet as a valid parquet file after ``change`` edited its columns (as lists)."""
    path = split_dir / INDEX
    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    change(columns)
    new = pa.table({name: pa.array(columns[name], type=table.schema.field(name).type) for name in columns})
    pq.write_table(new, path, compression="zstd", write_statistics=False)
    return columns


def flipped(value: object) -> object:
    """Another label of the same kind: a class id + 1, a value + 0.5, a multi-hot bit flipped, NaN -> 0."""
    if isinstance(value, list):
        return [1.0 - value[0], *value[1:]]
    if isinstance(value, float) and math.isnan(value):
        return 0.0
    return value + 1 if isinstance(value, int) else value + 0.5


def problems_of(results: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: found for name, found in results.items() if found}


# --- a good corpus passes, with and without its source ---


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_every_corpus_mini_verifies_against_its_source(mini, name):
    root, out = mini(name)
    assert problems_of(verify(out, source=root)) == {}
    assert set(verify(out)) == set(CORPORA[name].splits)
    for split in CORPORA[name].splits:
        manifest, count = read_manifest(out / split), CORPORA[name].count_raw(root, split, **MINIS[name][1])
        assert isinstance(count, RawCount) and count.unit and count.ignored == 0
        assert count.raw == (manifest["rows"] if count.rows else manifest["report"]["raw"])


def test_cli_verify_with_source_passes_and_prints_each_split(mini, capsys):
    root, out = mini("avmnist")
    assert main(["verify", str(out), "--source", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(f"ok {split}" for split in CORPORA["avmnist"].splits)


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_ignored_files_are_counted_not_raw_items_nor_skips(mini, tmp_path, name):
    root, out = mini(name)
    raw = copy_of(root, tmp_path / "raw")
    folders = [raw, *(p for p in raw.rglob("*") if p.is_dir())]
    for folder in folders:
        for ignored in IGNORED_NAMES:
            (folder / ignored).write_bytes(b"\0\1junk")
    assert problems_of(verify(out, source=raw)) == {}
    again = shard(name, raw, tmp_path / "shards" / name)
    for split, manifest in again.items():
        count = CORPORA[name].count_raw(raw, split, **MINIS[name][1])
        assert count.ignored >= len(IGNORED_NAMES)
        before = read_manifest(out / split)["report"]
        assert {k: manifest["report"][k] for k in ("raw", "written", "skipped")} == \
            {k: before[k] for k in ("raw", "written", "skipped")}
        if "ignored" in manifest["report"]:  # once the writer reports it
            assert manifest["report"]["ignored"] == count.ignored


# --- tampering: each caught, with the file, split and key named ---


def test_deleted_split_is_reported(mini, tmp_path, capsys):
    _, out = mini("avmnist")
    copy = copy_of(out, tmp_path)
    shutil.rmtree(copy / "valid")
    found = problems_of(verify(copy))
    assert list(found) == ["valid"] and len(found["valid"]) == 1
    assert "missing split" in found["valid"][0] and "mmdata shard avmnist" in found["valid"][0]
    assert main(["verify", str(copy)]) == 1
    out_text = capsys.readouterr().out
    assert "FAIL valid:" in out_text and "ok train" in out_text and "ok test" in out_text


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_flipped_label_in_the_index_is_caught(mini, tmp_path, name):
    _, out = mini(name)
    copy = copy_of(out, tmp_path)
    columns = rewrite_index(copy / "train", lambda c: c["label"].__setitem__(0, flipped(c["label"][0])))
    key = columns["key"][0]
    problems = verify(copy)["train"]
    assert any("index label" in p and key in p for p in problems), problems
    assert any(INDEX in p and "sha256 differs" in p and RECORD in p for p in problems)
    # The index-against-tar check finds it on its own too (no record to compare hashes with).
    assert any("index label" in p and key in p for p in verify_split(copy / "train"))
    assert all(not found for split, found in verify(copy).items() if split != "train")


def _swap_crc(columns: dict[str, list]) -> None:
    name = sorted(c for c in columns if c.startswith("crc32_"))[0]
    values = columns[name]
    j = next((j for j in range(1, len(values)) if values[j] != values[0]), None)
    if j is None:  # every row reads one stored sample (stock windows): alter the checksum instead
        values[0] ^= 1
    else:
        values[0], values[j] = values[j], values[0]


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_swapped_crc32_in_the_index_is_caught(mini, tmp_path, name):
    _, out = mini(name)
    copy = copy_of(out, tmp_path)
    before = pq.read_table(copy / "train" / INDEX).to_pydict()
    after = rewrite_index(copy / "train", _swap_crc)
    changed = [before["key"][i] for i in range(len(after["key"])) if any(
        before[c][i] != after[c][i] for c in after if c.startswith("crc32_"))]
    assert changed
    problems = verify_split(copy / "train")
    for key in changed:
        assert any("crc32" in p and key in p for p in problems), (key, problems)


def test_tampered_manifest_is_caught_by_the_record(mini, tmp_path):
    _, out = mini("avmnist")
    copy = copy_of(out, tmp_path)
    path = copy / "test" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["class_counts"]["0"] += 1  # a plausible edit: every other check still passes
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    assert problems_of(verify(copy)) == {"test": [
        f"{path}: sha256 differs from the one recorded in {copy / RECORD} (altered after the run; re-run "
        f"`mmdata shard` to rebuild it)"]}


def test_output_without_record_is_unfinished(mini, tmp_path, capsys):
    _, out = mini("avmnist")
    copy = copy_of(out, tmp_path)
    (copy / RECORD).unlink()
    found = problems_of(verify(copy))
    assert list(found) == [RECORD]
    assert "not a finished mmdata output" in found[RECORD][0] and "mmdata shard" in found[RECORD][0]
    assert main(["verify", str(copy)]) == 1 and f"FAIL {RECORD}:" in capsys.readouterr().out
    assert not is_mmdata_output(copy, "avmnist")


def test_extra_split_folder_is_reported(mini, tmp_path):
    _, out = mini("avmnist")
    copy = copy_of(out, tmp_path)
    shutil.copytree(copy / "train", copy / "extra")
    assert "not a split of corpus avmnist" in problems_of(verify(copy))["extra"][0]


def test_single_split_is_checked_against_its_parent_record(mini, tmp_path):
    _, out = mini("mmimdb")
    copy = copy_of(out, tmp_path)
    assert verify(copy / "valid") == {"valid": []}
    rewrite_index(copy / "valid", lambda c: None)  # same rows, new bytes: only the record notices
    assert any("sha256 differs" in p for p in verify(copy / "valid")["valid"])


# --- the source ledger ---


def test_raw_row_removed_after_sharding_names_split_and_counts(mini, tmp_path, capsys):
    root, out = mini("avmnist")
    raw = copy_of(root, tmp_path / "raw")
    for path in (raw / "test_labels.npy", raw / "image" / "test_data.npy", raw / "audio" / "test_data.npy"):
        np.save(path, np.load(path)[:-1])
    found = problems_of(verify(out, source=raw))
    assert list(found) == ["test"] and len(found["test"]) == 1
    message = found["test"][0]
    assert message.startswith("avmnist/test: ") and "9 raw items (source row)" in message
    assert "account for 10 (written 10 + skipped 0)" in message and "reason=raw_mismatch" in message
    assert main(["verify", str(out), "--source", str(raw)]) == 1
    assert "FAIL test: avmnist/test" in capsys.readouterr().out


def test_raw_clip_file_removed_after_sharding_is_caught(mini, tmp_path):
    root, out = mini("crema_d")
    raw = copy_of(root, tmp_path / "raw")
    (raw / "AudioWAV" / "1001_IEO_ANG_HI.wav").unlink()  # actor 1001 -> test; its flv remains: still one clip
    assert problems_of(verify(out, source=raw)) == {}
    (raw / "VideoFlash" / "1001_IEO_ANG_HI.flv").unlink()  # now the clip is gone
    test = read_manifest(out / "test")["report"]
    found = problems_of(verify(out, source=raw))
    assert list(found) == ["test"]
    assert f"{test['raw'] - 1} raw items (clip)" in found["test"][0] and f"account for {test['raw']}" in found["test"][0]


def test_stock_windows_reconcile_with_index_rows(mini):
    root, out = mini("stocks")
    count = CORPORA["stocks"].count_raw(root, "valid", **MINIS["stocks"][1])
    assert count.rows and count.raw == 20 == read_manifest(out / "valid")["rows"]
    with pytest.raises(LedgerError, match=r"stocks/valid: .* 19 raw items \(window\), the index holds 20 rows"):
        check_source_count(RawCount(19, "window", rows=True), read_manifest(out / "valid"), root, "stocks/valid")


def test_unbalanced_report_raises_a_named_ledger_error():
    with pytest.raises(LedgerError, match=r"x/train: .*raw 5 != written 3 \+ skipped 1 .*ledger_unbalanced"):
        check_ledger({"raw": 5, "written": 3, "skipped": 1}, "x/train")
    check_ledger({"raw": 4, "written": 3, "skipped": 1}, "x/train")


def test_unbalanced_manifest_report_is_a_verify_problem(mini, tmp_path):
    _, out = mini("avmnist")
    copy = copy_of(out, tmp_path)
    path = copy / "train" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["report"]["raw"] += 1
    path.write_text(json.dumps(manifest))
    assert any("ledger_unbalanced" in p for p in verify_split(copy / "train"))


# --- the record and the Corpus contract ---


def test_record_is_deterministic_and_recognises_its_corpus(mini, tmp_path):
    _, out = mini("hateful_memes")
    copy = copy_of(out, tmp_path)
    splits = list(CORPORA["hateful_memes"].splits)
    record = write_corpus_record(copy, "hateful_memes", splits)
    first = (copy / RECORD).read_bytes()
    assert write_corpus_record(copy, "hateful_memes", splits) == record and (copy / RECORD).read_bytes() == first
    assert read_corpus_record(copy) == record and record["splits"] == splits
    assert is_mmdata_output(copy, "hateful_memes") and not is_mmdata_output(copy, "mmimdb")
    assert not is_mmdata_output(tmp_path / "nowhere", "hateful_memes")
    (copy / RECORD).write_text("{not json")
    assert not is_mmdata_output(copy, "hateful_memes")
    with pytest.raises(ShardIntegrityError, match="unreadable corpus record"):
        read_corpus_record(copy)
    with pytest.raises(ShardIntegrityError, match="expected mmimdb/train"):
        write_corpus_record(copy, "mmimdb", ["train"])
    shutil.rmtree(copy / "test")
    with pytest.raises(ShardIntegrityError, match="no manifest"):
        write_corpus_record(copy, "hateful_memes", splits)


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_count_raw_is_declared_beside_the_reader_and_takes_its_options(name):
    corpus = CORPORA[name]
    # Beside the reader: in the corpus module, or in the reader MOSI and MOSEI share.
    assert corpus.count_raw is not None and corpus.count_raw.__module__ == corpus.iter_samples.__module__
    params = inspect.signature(corpus.count_raw).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    assert takes_any or corpus.options() <= set(params)
