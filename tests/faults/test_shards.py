"""6.10 Shard writing and 6.11 shard reading: the rows not owned by the output-safety (lock, signal, ENOSPC),
``mmdata verify`` and bench/faults.py work: encoder failures, size edge cases, stray files, reconciliation,
pickle refusal and resource stability."""
from __future__ import annotations

import gc
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

import mmdata
import mmdata.shards.write as write_module
from mmdata.errors import CodecError, ShardIntegrityError
from mmdata.shards.codec import decode
from mmdata.shards.manifest import MANIFEST, read_manifest
from mmdata.shards.write import write_split
from mmdata.types import Field
from tests.conftest import TOY_FEATURES, toy_samples, write_toy


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["__key__"]]


def test_shw_04_a_code_error_in_an_encoder_mid_shard_commits_nothing(tmp_path, monkeypatch):
    """SHW-04: an exception while encoding sample 7 (a bug, not bad data: the schema check passed) propagates;
    no split directory, no shard, no manifest is left that could pass for complete."""
    calls = {"n": 0}
    real = write_module.encode

    def failing(value, field):
        calls["n"] += 1
        if calls["n"] == 7 * len(TOY_FEATURES):
            raise RuntimeError("encoder bug")
        return real(value, field)

    monkeypatch.setattr(write_module, "encode", failing)
    with pytest.raises(RuntimeError, match="encoder bug"):
        write_split(toy_samples(20), TOY_FEATURES, tmp_path / "toy" / "train", corpus="toy", split="train",
                    max_samples=3)
    assert not list(tmp_path.rglob("*.tar")) and not list(tmp_path.rglob(MANIFEST))
    assert not (tmp_path / "toy" / "train").exists()


@pytest.mark.parametrize("n, max_samples, shards", [(1, 5, [1]), (5, 5, [5]), (6, 5, [5, 1]), (10, 5, [5, 5])])
def test_shw_08_shard_counts_at_the_edges_never_leave_an_empty_shard(tmp_path, n, max_samples, shards):
    """SHW-08: 1 sample, exactly max_samples, one more, and a multiple: shards hold exactly the expected counts,
    none is empty (0 samples is an error: tests/test_shards.py)."""
    manifest = write_split(toy_samples(n), TOY_FEATURES, tmp_path / "s", corpus="toy", split="train",
                           max_samples=max_samples)
    assert [s["samples"] for s in manifest["shards"]] == shards
    assert len(list((tmp_path / "s").glob("*.tar"))) == len(shards)


def test_shw_09_a_sample_larger_than_max_bytes_gets_a_shard_of_its_own(tmp_path):
    """SHW-09: documented rule "a shard always holds at least one sample": an oversized sample is written
    alone, its neighbours are packed as usual, and it reads back intact."""
    samples = toy_samples(6)
    features = {**TOY_FEATURES, "feat_audio": Field("float32", (None, 3), "npy")}
    samples[2]["feat_audio"] = np.ones((20_000, 3), np.float32)  # ~240 KB against a 64 KB bound
    manifest = write_split(samples, features, tmp_path / "s", corpus="toy", split="train", max_samples=10,
                           max_bytes=64 << 10)
    assert [s["samples"] for s in manifest["shards"]] == [2, 1, 3]
    batch = next(iter(mmdata.load(tmp_path / "s", fields=["feat_audio"], batch_size=6, shuffle=False)))
    assert int(batch["feat_audio_lengths"][2]) == 20_000


def test_shw_07_a_stray_tar_in_the_output_is_never_read(toy_split):
    """SHW-07: readers take the shard list from the manifest and index, not from a glob: a dropped-in
    ``*-000999.tar`` holding valid samples adds nothing (``verify`` flags it: tests/test_shards.py)."""
    before = _keys(mmdata.load(toy_split, batch_size=8, shuffle=False))
    first = sorted(toy_split.glob("*.tar"))[0]
    (toy_split / "toy-train-000999.tar").write_bytes(first.read_bytes())
    assert _keys(mmdata.load(toy_split, batch_size=8, shuffle=False)) == before and len(before) == 40


def test_shw_11_reconciliation_failure_fails_with_both_counts_and_commits_nothing(tmp_path, monkeypatch):
    """SHW-11: when a shard re-read holds fewer samples than the writer recorded (here a member is lost),
    the write fails naming both numbers and nothing is published."""
    real = write_module.shard_keys
    monkeypatch.setattr(write_module, "shard_keys", lambda path: real(path)[:-1])
    with pytest.raises(ShardIntegrityError, match=r"wrote 5 samples, read back 4"):
        write_toy(tmp_path / "toy" / "train", n=20, max_samples=5)
    assert not (tmp_path / "toy" / "train").exists() and not list(tmp_path.rglob("*.tar"))


def test_shr_10_pickled_payloads_are_refused_without_unpickling(tmp_path):
    """SHR-10: no codec unpickles: an .npy member holding an object array (a pickle inside) is a CodecError,
    raised before the pickle runs, and a manifest declaring a pickle codec is refused at open."""
    import io
    import json

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    buf = io.BytesIO()
    np.save(buf, np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(CodecError, match="pickle"):
        decode(buf.getvalue(), Field("float32", (None,), "npy"))
    assert not marker.exists()
    with pytest.raises(ValueError, match="pyd"):
        Field("float32", (None,), "pyd")
    split = tmp_path / "toy" / "train"
    write_toy(split, n=10)
    manifest = read_manifest(split)
    manifest["features"]["text"]["codec"] = manifest["codecs"]["text"] = "pyd"
    (split / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="pyd"):
        mmdata.load(split)


def _open_fds() -> int:
    # Collect first: earlier tests' objects freed by the cyclic collector mid-test made the count flaky.
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to count file descriptors")
@pytest.mark.parametrize("workers, epochs", [(0, 20), (2, 6)])
def test_shr_11_no_descriptor_or_process_leak_across_epochs(toy_split, workers, epochs):
    """SHR-11: after one epoch, further epochs keep the same worker processes (persistent) and the open file
    descriptors within a fixed bound (each worker's shared-memory slots arrive once: at most workers x
    (prefetch_factor + 2) descriptors); close() ends every worker and returns every descriptor."""
    deadline = time.monotonic() + 15  # earlier tests' workers may still be exiting
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    before = _open_fds()
    loader = mmdata.load(toy_split, batch_size=8, num_workers=workers)
    assert len(_keys(loader)) == 40
    fds, children = _open_fds(), {p.pid for p in multiprocessing.active_children()}
    assert len(children) == workers
    for epoch in range(1, epochs):
        loader.set_epoch(epoch)
        assert len(_keys(loader)) == 40
        assert {p.pid for p in multiprocessing.active_children()} == children
        assert _open_fds() <= fds + workers * 4  # prefetch_factor 2: 4 slots per worker
    loader.close()
    deadline = time.monotonic() + 15
    while (_open_fds() > before or multiprocessing.active_children()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_fds() <= before and multiprocessing.active_children() == []
