"""Shard writing on Ray (issue 15.2): ``engine="ray"`` writes the local engine's bytes (every file of the output,
manifest included) on corpora of different kinds, skips and duplicates merged exactly; a task whose worker is
killed is retried, or the run fails with nothing published; ``mmdata shard --engine ray`` parses and runs."""
from __future__ import annotations

import faulthandler
import os
import sys
from pathlib import Path

import pytest

import mmdata.shards.write as write_module
from mmdata.cli import build_parser, main
from mmdata.corpora import get_corpus
from mmdata.corpora.base import Skip
from mmdata.errors import ConfigError, ShardIntegrityError
from mmdata.shards.build import shard_corpus
from mmdata.shards.codec import encode
from mmdata.shards.parts import FAULTS_ENV
from mmdata.shards.write import write_split
from tests.conftest import TOY_FEATURES, toy_samples
from tests.minis import CONTRACT, PARAMS, file_bytes, minis, raw, same, toy_items  # noqa: F401 - minis: autouse

ray = pytest.importorskip("ray")
from mmdata.shards.ray_engine import RaySplit, import_ray  # noqa: E402 - after the skip: it needs Ray

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


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(LIMIT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


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
    files = file_bytes(tmp_path / "local" / corpus)
    assert files == file_bytes(tmp_path / "ray" / corpus) and len(files) >= 10
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


def test_skips_duplicates_and_byte_cuts_merge_exactly(faults, tmp_path):
    """The fallback path on hand-made items: skip list, repairs, audit and shards equal the local engine's."""
    kwargs = {"corpus": "toy", "split": "train", "max_samples": 8, "max_bytes": 14_000, "max_skip_fraction": 0.2}
    local = write_split(toy_items(), TOY_FEATURES, tmp_path / "local" / "train", **kwargs)
    run = RaySplit(ray, toy_items(), part_size=7)
    remote = write_split(run.items(), TOY_FEATURES, tmp_path / "ray" / "train", writer=run.write, **kwargs)
    assert local == remote
    assert {s["reason"] for s in local["report"]["skips"]} >= {"duplicate_key", "bad_key", "shape"}
    assert len({s["samples"] for s in local["shards"]}) > 1  # cut by bytes and by count
    assert file_bytes(tmp_path / "local") == file_bytes(tmp_path / "ray")


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
    assert file_bytes(tmp_path / "local") == file_bytes(tmp_path / "ray")


def test_a_task_that_keeps_dying_fails_the_run_with_nothing_published(faults, tmp_path):
    """Every try of shard 1's writing task is killed: the run fails and neither output nor temp folder remain,
    and an earlier output in its place is left as it was."""
    out = tmp_path / "out" / "avmnist"
    _shard("avmnist", out, "local", 90)
    before = file_bytes(out)
    (faults / "avmnist-valid-shard1").write_text("99")
    with pytest.raises(ShardIntegrityError, match="avmnist/valid: a Ray task .* nothing published"):
        _shard("avmnist", out, "ray", 40)
    (faults / "avmnist-valid-shard1").unlink()
    assert file_bytes(out) == before
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
    assert file_bytes(outs[0]) == file_bytes(outs[1])
    assert ray.is_initialized()  # the CLI used this process's session and did not shut it down


def test_unknown_engine_and_missing_ray_are_config_errors(tmp_path, monkeypatch):
    from pipelines.params import keyword_options

    assert {"engine", "address", "processes"} <= keyword_options(shard_corpus)  # corpora.<name>.shard keys
    with pytest.raises(ConfigError, match="unknown shard engine 'spark'.*local, ray"):
        shard_corpus("avmnist", raw("avmnist"), tmp_path / "o", engine="spark")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'mmdata\[ray\]'"):
        import_ray()


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
            assert same(whole, parts), (split, size)
        for at in sorted({*range(min(count, 12)), *range(max(0, count - 3), count)}):
            assert same(whole[at:at + 1], _part(corpus, root, split, options, at, at + 1)), (split, at)
        assert same(whole[max(0, count - 2):], _part(corpus, root, split, options, max(0, count - 2), count + 5))
        assert _part(corpus, root, split, options, count, count + 3) == []
        reasons += [item.reason for item in whole if isinstance(item, Skip)]
    if expected is not None:
        assert sorted(reasons) == expected
