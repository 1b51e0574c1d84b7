"""The synthetic minis as ``dvc repro`` writes them (generated once per test module), the same minis damaged
in the ways each corpus's reader must skip, and hand-made items with what admission and the checks refuse: what
the tests of the writing engines compare one engine's bytes on."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmdata.corpora.base import Skip
from mmdata.corpora.sunrgbd import split_list
from mmdata.synth import SYNTHS
from tests.conftest import toy_samples

PARAMS = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["corpora"]
#: The synthetic minis the running test module generated (corpus -> root), under ``_FOLDER[0]`` (a clean clone has no
#: data/raw before `dvc repro`).
_MINIS: dict[str, Path] = {}
_FOLDER: list[Path] = []
@pytest.fixture(scope="module", autouse=True)
def minis(tmp_path_factory: pytest.TempPathFactory):
    """Where :func:`raw` writes the minis, for this module."""
    _FOLDER.append(tmp_path_factory.mktemp("minis"))
    yield
    _MINIS.clear()
    _FOLDER.clear()


def raw(corpus: str) -> Path:
    """The corpus's synthetic mini with params.yaml's synth settings (the layout ``dvc repro`` writes to
    data/raw), generated on first use."""
    if corpus not in _MINIS:
        _MINIS[corpus] = SYNTHS[corpus](_FOLDER[0] / corpus, **PARAMS[corpus].get("synth", {}))
    return _MINIS[corpus]



def file_bytes(directory: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``directory``."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def toy_items() -> list:
    """Toy samples with what admission refuses (a duplicate key, a bad key) and what the checks refuse (a wrong
    shape; a duplicate of it), plus long texts, so shards are cut by bytes as well as by count."""
    samples = toy_samples(70)
    for i in range(0, 70, 6):
        samples[i]["text"] = "x" * (2500 + 90 * i)
    samples[9]["image"] = np.zeros((3, 3), np.uint8)  # fails its check in the task
    samples[20] = {**samples[9]}  # a duplicate of a sample that then fails its check
    samples[33] = {**samples[12]}  # a plain duplicate
    samples[41]["__key__"] = "toy/train/Bad Key"
    return samples


def same(one: list, other: list) -> bool:
    """Equal item by item: Skips equal, Samples with the same keys and equal values."""
    def equal(a, b) -> bool:
        if isinstance(a, Skip) or isinstance(b, Skip):
            return a == b
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k]
                                            for k in a)
    return len(one) == len(other) and all(equal(a, b) for a, b in zip(one, other))


def _hateful_memes_root(tmp_path: Path) -> Path:
    """A duplicate id and broken lines in train.jsonl (a part's duplicates are found from the lines before it)."""
    root = shutil.copytree(raw("hateful_memes"), tmp_path / "hateful_memes")
    lines = (root / "train.jsonl").read_text().splitlines()
    (root / "train.jsonl").write_text("\n".join([*lines[:5], lines[2], "{broken", '{"text": "no id"}', *lines[5:40]])
                                      + "\n")
    return root


def _mmimdb_root(tmp_path: Path) -> Path:
    """split.json with an id listed twice, one unpadded (the same file), one missing, one climbing out of the
    release, and train ids leaked into valid."""
    root = shutil.copytree(raw("mmimdb"), tmp_path / "mmimdb")
    ids = json.loads((root / "mmimdb" / "split.json").read_text())
    train = ids["train"][:30]
    padded = next(m for m in train if m.startswith("0"))
    ids["train"] = [*train[:4], train[1], padded.lstrip("0"), "1234567", "../../x", *train[4:]]
    ids["dev"] = [train[0], *ids["dev"][:10], train[7]]
    (root / "mmimdb" / "split.json").write_text(json.dumps(ids))
    return root


def _sunrgbd_root(tmp_path: Path) -> Path:
    """A listed scene folder removed and another one's depth PNGs removed (two skips of the train split)."""
    root = shutil.copytree(raw("sunrgbd"), tmp_path / "sunrgbd")
    train = split_list(root, "train")
    shutil.rmtree(root / "SUNRGBD" / train[3])
    for png in (root / "SUNRGBD" / train[8] / "depth").glob("*.png"):
        png.unlink()
    return root


def _snli_ve_root(tmp_path: Path) -> Path:
    """A repeated pairID and a broken line in the train JSONL, and an image file removed."""
    root = shutil.copytree(raw("snli_ve"), tmp_path / "snli_ve")
    lines = (root / "snli_ve_train.jsonl").read_text().splitlines()
    (root / "snli_ve_train.jsonl").write_text("\n".join([*lines[:3], lines[1], "{broken", *lines[3:]]) + "\n")
    image = json.loads(lines[10])["Flikr30kID"]
    (root / "flickr30k_images" / image).unlink()
    return root


def _nyuv2_root(tmp_path: Path) -> Path:
    """The depth of the third train frame zeroed (an ``invalid_depth`` skip) and a label id out of range in the
    fifth (``label_range``)."""
    import h5py
    from scipy.io import loadmat

    root = shutil.copytree(raw("nyuv2"), tmp_path / "nyuv2")
    train = np.ravel(loadmat(root / "splits.mat")["trainNdxs"]) - 1
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "r+") as f:
        f["depths"][int(train[2])] = 0
        f["labels"][int(train[4]), 0, 0] = 60000
    return root


def _mosei_root(tmp_path: Path) -> Path:
    """A fold video absent from the labels (one skip) and one without its COVAREP entry (all its segments
    skipped), in the SDK release."""
    import h5py

    root = shutil.copytree(raw("mosei"), tmp_path / "mosei")
    folds = root / "cmumosei" / "cmu_mosei_std_folds.py"
    text = folds.read_text()
    train = text.split("standard_train_fold = ['", 1)[1].split("'")
    folds.write_text(text.replace(f"'{train[2]}'", f"'{train[2]}', 'noSuchVideo'", 1))
    with h5py.File(root / "cmumosei" / "CMU_MOSEI_COVAREP.csd", "r+") as f:
        del f["COVAREP"]["data"][train[6]]
    return root


#: corpus -> (its root for the contract test, made from tmp_path; the reasons of the skips of its splits)
CONTRACT = {
    "hateful_memes": (_hateful_memes_root, ["bad_json", "duplicate_id", "missing_key"]),
    "avmnist": (lambda tmp_path: raw("avmnist"), []),
    "crema_d": (lambda tmp_path: raw("crema_d"), None),
    "mmimdb": (_mmimdb_root, ["duplicate_id", "duplicate_id", "duplicate_id", "duplicate_id", "missing_json",
                              "outside_root"]),
    "sunrgbd": (_sunrgbd_root, ["missing_depth", "missing_scene"]),
    "mosei": (_mosei_root, ["missing_feat_audio"] * 4 + ["missing_labels"]),
    "mosi": (lambda tmp_path: raw("mosi"), []),
    "nyuv2": (_nyuv2_root, ["invalid_depth", "label_range"]),
    "snli_ve": (_snli_ve_root, ["bad_json", "duplicate_id", "missing_image", *["no_gold_label"] * 7]),
}
