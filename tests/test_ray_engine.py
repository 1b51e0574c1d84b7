"""Shard writing on Ray (issue 15.2): ``engine="ray"`` writes the local engine's bytes (every file of the output,
manifest included) on corpora of different kinds, skips and duplicates merged exactly; a task whose worker is
killed is retried, or the run fails with nothing published; ``mmdata shard --engine ray`` parses and runs."""
from __future__ import annotations

import faulthandler
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import mmdata.shards.write as write_module
from mmdata.cli import build_parser, main
from mmdata.corpora import get_corpus
from mmdata.corpora.base import Skip
from mmdata.corpora.sunrgbd import split_list
from mmdata.errors import ConfigError, ShardIntegrityError
from mmdata.shards.build import shard_corpus
from mmdata.shards.codec import encode
from mmdata.shards.parts import FAULTS_ENV
from mmdata.shards.write import write_split
from mmdata.synth import SYNTHS
from tests.conftest import TOY_FEATURES, toy_samples

ray = pytest.importorskip("ray")
from mmdata.shards.ray_engine import RaySplit, import_ray  # noqa: E402 - after the skip: it needs Ray

PARAMS = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["corpora"]
#: The synthetic minis this module generated (corpus -> root), under ``_FOLDER[0]`` (a clean clone has no
#: data/raw before `dvc repro`).
_MINIS: dict[str, Path] = {}
_FOLDER: list[Path] = []
#: Seconds one test may run before the process is stopped with a traceback (a hung Ray task must not hang CI).
LIMIT = 150


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory):
    """The fault folder the Ray workers read (set before ``ray.init``, so they inherit it); Ray with 2 CPUs."""
    folder = tmp_path_factory.mktemp("faults")
    os.environ[FAULTS_ENV] = str(folder)
    for attempt in (1, 2):  # Ray gives its node 30 s to start: on a box loaded by other jobs, try once more
        try:
            ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield folder
    ray.shutdown()
    del os.environ[FAULTS_ENV]


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


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(LIMIT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _files(directory: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``directory``."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _shard(corpus: str, out: Path, engine: str, max_samples: int) -> dict:
    return shard_corpus(corpus, raw(corpus), out, reader=PARAMS[corpus]["reader"], max_samples=max_samples,
                        progress=False, engine=engine)


@pytest.mark.parametrize("corpus, max_samples", [("avmnist", 90), ("hateful_memes", 40), ("crema_d", 30),
                                                 ("mmimdb", 100), ("sunrgbd", 40), ("snli_ve", 60), ("nyuv2", 20),
                                                 ("mosi", 25), ("mosei", 60), ("stocks", 25)])
def test_ray_writes_the_bytes_of_the_local_engine(faults, tmp_path, corpus, max_samples):
    """npy rows (avmnist), jpg + JSONL (hateful_memes), wav + flv with broken clips (crema_d), jpeg + json per
    movie (mmimdb), scene folders of png + jpg + txt (sunrgbd), images shared by pairs (snli_ve, a View), frames
    of one HDF5 file (nyuv2), SDK .csd segments (mosei), all read part by part in the tasks; pickle rows (mosi: a
    pickle would be loaded whole by every part) and stocks (one windowed series per split, a View counted in index
    rows) are read by the driver and shipped (the fallback)."""
    local, remote = _shard(corpus, tmp_path / "local" / corpus, "local", max_samples), \
        _shard(corpus, tmp_path / "ray" / corpus, "ray", max_samples)
    assert local == remote
    assert max(len(m["shards"]) for m in local.values()) >= (1 if corpus == "stocks" else 3)
    files = _files(tmp_path / "local" / corpus)
    assert files == _files(tmp_path / "ray" / corpus) and len(files) >= 10
    if corpus == "crema_d":
        assert local["train"]["report"]["skipped"] >= 5  # the synth's broken clips: same skips, same order
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name != corpus]  # no temporary folder or lock left


def test_sources_read_whole_are_not_parted():
    """A pickle release (the MOSI mini) and the stocks are read once by the driver; an SDK release (the MOSEI mini)
    and per-file corpora in parts."""
    def parted(corpus: str) -> bool:
        count = get_corpus(corpus).count_raw(raw(corpus), "train", **PARAMS[corpus]["reader"])
        return count.parted and not count.rows
    assert not parted("mosi") and not parted("stocks")
    assert parted("mosei") and parted("avmnist") and parted("mmimdb")


def _toy_items() -> list:
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


def test_skips_duplicates_and_byte_cuts_merge_exactly(faults, tmp_path):
    """The fallback path on hand-made items: skip list, repairs, audit and shards equal the local engine's."""
    kwargs = {"corpus": "toy", "split": "train", "max_samples": 8, "max_bytes": 14_000, "max_skip_fraction": 0.2}
    local = write_split(_toy_items(), TOY_FEATURES, tmp_path / "local" / "train", **kwargs)
    run = RaySplit(ray, _toy_items(), part_size=7)
    remote = write_split(run.items(), TOY_FEATURES, tmp_path / "ray" / "train", writer=run.write, **kwargs)
    assert local == remote
    assert {s["reason"] for s in local["report"]["skips"]} >= {"duplicate_key", "bad_key", "shape"}
    assert len({s["samples"] for s in local["shards"]}) > 1  # cut by bytes and by count
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")


def _encode_failing(value, field):
    """Module level, so a Ray worker imports it: an encoder bug on one sample's text."""
    if field.codec == "txt" and value == "sample 31":
        raise RuntimeError("encoder bug")
    return encode(value, field)


def test_an_encoder_error_fails_the_run_with_nothing_published(faults, tmp_path, monkeypatch):
    """Raised in a task, it is raised by the driver when the sample is admitted (as the local engine raises it)."""
    monkeypatch.setattr(write_module, "encode", _encode_failing)
    run = RaySplit(ray, toy_samples(60), part_size=7)
    with pytest.raises(RuntimeError, match="encoder bug"):
        write_split(run.items(), TOY_FEATURES, tmp_path / "out" / "train", corpus="toy", split="train",
                    max_samples=8, writer=run.write)
    assert not list((tmp_path / "out").iterdir())


def test_a_killed_task_is_retried_and_the_bytes_are_unchanged(faults, tmp_path):
    """The worker of a reading task (part 1) and of a writing task (shard 2) exit mid-run once each."""
    for task in ("part1", "shard2"):
        (faults / f"avmnist-train-{task}").write_text("1")
    remote = _shard("avmnist", tmp_path / "ray" / "avmnist", "ray", 90)
    assert [(faults / f"avmnist-train-{task}").read_text() for task in ("part1", "shard2")] == ["0", "0"]
    local = _shard("avmnist", tmp_path / "local" / "avmnist", "local", 90)
    assert local == remote
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")


def test_a_task_that_keeps_dying_fails_the_run_with_nothing_published(faults, tmp_path):
    """Every try of shard 1's writing task is killed: the run fails and neither output nor temp folder remain,
    and an earlier output in its place is left as it was."""
    out = tmp_path / "out" / "avmnist"
    _shard("avmnist", out, "local", 90)
    before = _files(out)
    (faults / "avmnist-valid-shard1").write_text("99")
    with pytest.raises(ShardIntegrityError, match="avmnist/valid: a Ray task .* nothing published"):
        _shard("avmnist", out, "ray", 40)
    (faults / "avmnist-valid-shard1").unlink()
    assert _files(out) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["avmnist"]  # no tmp, no lock
    assert not list(out.glob("*.tmp-*"))


def test_cli_engine_ray(faults, tmp_path, capsys):
    args = build_parser().parse_args(["shard", "avmnist", "--root", "r", "--out", "o", "--engine", "ray",
                                      "--address", "auto", "--processes", "3"])
    assert (args.engine, args.address, args.processes) == ("ray", "auto", 3)
    assert build_parser().parse_args(["shard", "avmnist", "--root", "r", "--out", "o"]).engine == "local"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["shard", "avmnist", "--root", "r", "--out", "o", "--engine", "spark"])
    outs = [tmp_path / engine / "avmnist" for engine in ("local", "ray")]
    for engine, out in zip(("local", "ray"), outs):
        assert main(["shard", "avmnist", "--root", str(raw("avmnist")), "--out", str(out), "--max-samples", "200",
                     "--engine", engine]) == 0
    assert _files(outs[0]) == _files(outs[1])
    assert ray.is_initialized()  # the CLI used this process's session and did not shut it down


def test_unknown_engine_and_missing_ray_are_config_errors(tmp_path, monkeypatch):
    from pipelines.params import keyword_options

    assert {"engine", "address", "processes"} <= keyword_options(shard_corpus)  # corpora.<name>.shard keys
    with pytest.raises(ConfigError, match="unknown shard engine 'spark'.*local, ray"):
        shard_corpus("avmnist", raw("avmnist"), tmp_path / "o", engine="spark")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'mmdata\[ray\]'"):
        import_ray()


def _same(one: list, other: list) -> bool:
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


def _part(corpus, root, split: str, options: dict, start: int, stop: int) -> list:
    return list(corpus.iter_part(root, split, start, stop, **options))


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_iter_part_gives_the_items_of_iter_samples(tmp_path, name):
    """On every split: parts of 7 and of a third of the split, concatenated, are iter_samples' items (the same
    Samples and Skips, in order); so are parts of 1 item (the first 12 and the last 3) and parts past the end."""
    make_root, expected = CONTRACT[name]
    root, corpus, options = make_root(tmp_path), get_corpus(name), PARAMS[name]["reader"]
    reasons = []
    for split in corpus.splits:
        whole = list(corpus.iter_samples(root, split, **options))
        count = corpus.count_raw(root, split, **options).raw
        assert len(whole) == count
        for size in (7, max(1, count // 3)):
            parts = [item for start in range(0, count, size)
                     for item in _part(corpus, root, split, options, start, min(start + size, count))]
            assert _same(whole, parts), (split, size)
        for at in sorted({*range(min(count, 12)), *range(max(0, count - 3), count)}):
            assert _same(whole[at:at + 1], _part(corpus, root, split, options, at, at + 1)), (split, at)
        assert _same(whole[max(0, count - 2):], _part(corpus, root, split, options, max(0, count - 2), count + 5))
        assert _part(corpus, root, split, options, count, count + 3) == []
        reasons += [item.reason for item in whole if isinstance(item, Skip)]
    if expected is not None:
        assert sorted(reasons) == expected
