"""6.1 Identity and cross-modal join: keys are escaped by a documented rule, collisions are named, ids do not
depend on the order a directory is listed in."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmdata.corpora import crema_d
from mmdata.corpora.base import SOURCE
from mmdata.shards.write import write_split
from mmdata.types import KEY_PATTERN, make_key
from tests.conftest import TOY_FEATURES, toy_samples
from tests.faults._helpers import crema_clip, digests, split_items


@pytest.mark.parametrize("source_id, key", [
    ("clip_v1.2", "toy/train/clip_v1-2"), ("a b", "toy/train/a-b"), ("../x", "toy/train/x"),
    ("/abs/path", "toy/train/abs-path"), ("café.jpg", "toy/train/caf-jpg"),
])
def test_key_03_unsafe_ids_are_escaped_by_one_documented_rule(source_id, key):
    """KEY-03: dots, spaces, '..', a leading '/' and non-ASCII become '-' (never a path component)."""
    assert make_key("toy", "train", source_id) == key and KEY_PATTERN.match(key)


def test_key_03_an_id_with_nothing_left_is_an_error_naming_it():
    """An id made only of unsafe characters cannot be keyed: an error naming it, not an empty key."""
    with pytest.raises(ValueError, match="'é'"):
        make_key("toy", "train", "é")


def test_key_01_03_escaping_collisions_are_skipped_naming_both_sources(tmp_path):
    """KEY-01/KEY-03: 'a.b' and 'a-b' escape to one key; the writer keeps the first and skips the second as
    ``duplicate_key``, naming both raw sources (the escaping is not injective, the key set catches it)."""
    samples = toy_samples(12)
    samples[3]["__key__"], samples[3][SOURCE] = make_key("toy", "train", "a.b"), "raw/a.b.npy"
    samples[7]["__key__"], samples[7][SOURCE] = make_key("toy", "train", "a-b"), "raw/a-b.npy"
    report = write_split(samples, TOY_FEATURES, tmp_path / "s", corpus="toy", split="train",
                         max_skip_fraction=0.2)["report"]
    (skip,) = report["skips"]
    assert (skip["reason"], skip["key"], skip["source"]) == ("duplicate_key", "toy/train/a-b", "raw/a-b.npy")
    assert "raw/a.b.npy" in skip["detail"]  # the first writer of the key
    assert report["raw"] == 12 == report["written"] + report["skipped"]


def test_key_04_case_only_collisions_are_refused(tmp_path):
    """KEY-04: 'A' and 'a' are one file on macOS/Windows: the second is skipped as ``duplicate_key_case``, naming
    both keys and both raw sources."""
    samples = toy_samples(12)
    samples[3]["__key__"], samples[7]["__key__"] = "toy/train/Clip", "toy/train/clip"
    samples[3][SOURCE], samples[7][SOURCE] = "raw/Clip.npy", "raw/clip.npy"
    report = write_split(samples, TOY_FEATURES, tmp_path / "s", corpus="toy", split="train",
                         max_skip_fraction=0.2)["report"]
    assert report["skipped"] == 1
    (skip,) = report["skips"]
    assert (skip["reason"], skip["key"], skip["source"]) == ("duplicate_key_case", "toy/train/clip", "raw/clip.npy")
    assert "toy/train/Clip" in skip["detail"] and "raw/Clip.npy" in skip["detail"]


def test_key_10_keys_and_shards_do_not_depend_on_listing_order(tmp_path, monkeypatch):
    """KEY-10: the reader globs its media; listed in reverse (as another file system may), the same keys in
    the same order and byte-identical shards come out."""
    root = tmp_path / "raw"
    for name in ("1003_IEO_HAP_LO", "1003_IEO_SAD_HI", "1004_DFA_ANG_XX", "1005_TIE_NEU_XX"):
        crema_clip(root, name)

    def shard(out: Path) -> list[str]:
        samples, skips = split_items(list(crema_d.iter_samples(root, "train")))
        assert not skips
        write_split(samples, crema_d.features(root), out, corpus="crema_d", split="train", max_samples=2)
        return [s["__key__"] for s in samples]

    keys = shard(tmp_path / "a")
    listing = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter(sorted(listing(self, pattern), reverse=True)))
    assert [p.name for p in (root / "AudioWAV").glob("*.wav")][0] == "1005_TIE_NEU_XX.wav"  # really reversed
    assert shard(tmp_path / "b") == keys == sorted(keys)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
