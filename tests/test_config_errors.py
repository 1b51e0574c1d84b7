"""Configuration mistakes fail at once with a ConfigError that names the bad key or name and the valid ones."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmdata.corpora import CORPORA, get_corpus
from mmdata.errors import ConfigError
from pipelines import shard as shard_stage
from pipelines import synth as synth_stage
from pipelines.params import CORPUS_KEYS, EXPERIMENT_KEYS, TOP_LEVEL, corpus_params, experiment_params, load_params
from pipelines.train import TRAIN_KEYS, build, train_settings

GOOD = {
    "seed": 0,
    "corpora": {"avmnist": {"root": "data/raw/avmnist", "synth": {"seed": 0, "train": 24, "test": 10},
                            "reader": {}, "shard": {"max_samples": 10}}},
    "train": {"epochs": 1, "batch_size": 4, "lr": 0.01},
    "experiments": {"avmnist": {"fused": {"method": "late_fusion", "fields": ["image"]}}},
}


def _write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _with(**changes) -> dict:
    """A deep copy of GOOD with ``changes`` applied at dotted paths (``corpora__avmnist__rooot=...``)."""
    params = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    return params


def test_good_params_load(tmp_path):
    assert load_params(_write(tmp_path, GOOD)) == GOOD


@pytest.mark.parametrize("typo, where, valid", [
    ({"sed": 1}, "the top level", TOP_LEVEL),
    ({"corpora__avmnist__rooot": "x"}, "corpora.avmnist", CORPUS_KEYS),
    ({"experiments__avmnist__fused__feilds": ["image"]}, "experiments.avmnist.fused", EXPERIMENT_KEYS),
    ({"experiments__mosi": {"fused": {"method": "late_fusion", "fields": ["x"]}}}, "experiments", {"avmnist"}),
])
def test_typo_names_the_key_where_and_the_valid_ones(tmp_path, typo, where, valid):
    bad = next(iter(typo)).split("__")[-1]
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, _with(**typo)))
    message = str(err.value)
    assert repr(bad) in message and where in message
    assert all(repr(key) in message for key in valid)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_unconfigured_corpus_and_experiment_list_the_configured_ones():
    with pytest.raises(ConfigError, match=r"'mosi' is not configured.*\['avmnist'\]"):
        corpus_params(GOOD, "mosi")
    with pytest.raises(ConfigError, match=r"'nope' is not configured.*\['fused'\]"):
        experiment_params(GOOD, "avmnist", "nope")
    with pytest.raises(ConfigError, match=r"corpus 'mosi' is not configured under experiments:.*\['avmnist'\]"):
        experiment_params(GOOD, "mosi", "fused")
    assert experiment_params(GOOD, "avmnist", "fused")["corpus"] == "avmnist"  # the block's corpus, filled in


def test_shard_stage_of_an_unconfigured_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"corpus 'mosi' is not configured under corpora:.*\['avmnist'\]"):
        shard_stage.main(["mosi"])
    assert not (tmp_path / "data").exists()


def test_shard_stage_rejects_an_unregistered_corpus(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, GOOD)
    with pytest.raises(SystemExit) as exc:
        shard_stage.main(["nope"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "nope" in err and all(name in err for name in CORPORA)


def test_shard_stage_typo_in_shard_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, _with(corpora__avmnist__shard={"max_sampels": 5}))
    with pytest.raises(ConfigError, match=r"'max_sampels'.*corpora\.avmnist\.shard.*'max_samples'"):
        shard_stage.main(["avmnist"])


def test_shard_stage_unknown_reader_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, _with(corpora__avmnist__reader={"mmapp": True}))
    with pytest.raises(ConfigError, match=r"'mmapp'.*valid: \['mmap'\].*corpora\.avmnist\.reader"):
        shard_stage.main(["avmnist"])
    assert not (tmp_path / "data").exists()


def test_shard_stage_missing_root_says_run_synth(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"mmdata synth avmnist"):
        shard_stage.main(["avmnist"])


def test_synth_stage_typo_in_synth_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, _with(corpora__avmnist__synth={"trian": 24}))
    with pytest.raises(ConfigError, match=r"'trian'.*corpora\.avmnist\.synth.*'train'"):
        synth_stage.main(["avmnist"])
    assert not (tmp_path / "data").exists()


def test_unknown_method_names_the_known_ones():
    exp = {"corpus": "avmnist", "method": "early_fuson", "fields": ["image"]}
    with pytest.raises(ValueError, match=r"unknown method 'early_fuson'; known: .*late_fusion"):
        build(exp, None, 0)  # fails before the loader is touched


def test_unknown_model_option_names_the_valid_ones():
    exp = {"corpus": "avmnist", "method": "late_fusion", "fields": ["image"], "model": {"dimm": 8}}
    with pytest.raises(ConfigError, match=r"'dimm'.*'dim'") as err:
        build(exp, None, 0)
    assert "'fields'" not in str(err.value).split("valid:")[1]  # fields come from the experiment, not model:


def test_typo_in_train_settings(tmp_path):
    params = _with(experiments__avmnist__fused__train={"epoch": 2})
    with pytest.raises(ConfigError, match=r"'epoch'.*experiments\.avmnist\.fused\.train") as err:
        train_settings(params, "avmnist", "fused")
    assert all(repr(key) in str(err.value) for key in TRAIN_KEYS)


def test_get_corpus_unknown_lists_known():
    with pytest.raises(ConfigError) as err:
        get_corpus("nope")
    assert "'nope'" in str(err.value) and all(name in str(err.value) for name in CORPORA)
    assert isinstance(err.value, ValueError)  # callers catching ValueError still catch it
    assert get_corpus("avmnist") is CORPORA["avmnist"]


@pytest.mark.parametrize("block", ["samplers", "augment"])
def test_removed_samplers_and_augment_blocks_are_refused(tmp_path, block):
    """No stage read them, so they were removed (they return as per-experiment keys); a params.yaml that still
    has one fails by name instead of suggesting a knob that changes nothing."""
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, {**GOOD, block: {}}))
    assert repr(block) in str(err.value) and "the top level" in str(err.value)
    assert all(repr(key) in str(err.value) for key in TOP_LEVEL) and block not in TOP_LEVEL


#: Augmenter options per corpus, as the methods' per-experiment ``augment`` keys will give them.
AUGMENT = {
    "avmnist": {"policy": {"image": ["rotate", "crop", "jitter", "noise"],
                           "audio_spec": ["shift", "noise", "timemask", "freqmask"]},
                "strength": 0.5, "p": 1.0, "text_in_image": True},  # a mirrored digit is another glyph
    "mosi": {"policy": None, "strength": 0.3, "p": 1.0},
}


def test_augment_blocks_build_augmenters_for_the_corpus_fields(tmp_path):
    from mmdata.augment import Augmenter
    from mmdata.synth import SYNTHS
    from pipelines.params import PARAMS

    params = yaml.safe_load(PARAMS.read_text())
    for name, block in AUGMENT.items():
        root = SYNTHS[name](tmp_path / name, **({"train": 24, "test": 6} if name == "avmnist" else
                                                {"train": 6, "valid": 3, "test": 3}))
        features = CORPORA[name].features(root, **params["corpora"][name]["reader"])
        assert isinstance(Augmenter.from_features(features, **block), Augmenter)


#: Every key of RENAMED (mmdata/errors.py) where it was used: (block, corpus, old key, new key, a value).
RENAMES = [
    ("reader", "crema_d", "frame_size", "image_size", 32),
    ("reader", "nyuv2", "size", "image_size", [15, 20]),
    ("reader", "sunrgbd", "depth_dir", "depth_source", "depth_bfx"),
    ("synth", "mmimdb", "dev", "valid", 3),
    ("synth", "hateful_memes", "dev", "valid", 3),
    ("synth", "snli_ve", "dev", "valid", 3),
]


def _renamed_block(block: str, corpus: str, old: str, new: str, value) -> dict:
    """The repository's ``corpora.<corpus>`` block with ``new`` in its ``block`` swapped for ``old``."""
    from pipelines.params import PARAMS

    config = yaml.safe_load(PARAMS.read_text())["corpora"][corpus]
    assert new in config[block]  # the new name is the one params.yaml uses
    config[block] = {**{k: v for k, v in config[block].items() if k != new}, old: value}
    return config


def test_renames_cover_the_table_and_no_option_keeps_an_old_name():
    from mmdata.errors import RENAMED
    from mmdata.synth import SYNTHS
    from pipelines.params import keyword_options

    assert {(old, new) for _, _, old, new, _ in RENAMES} == set(RENAMED.items())
    for block, corpus, old, new, _ in RENAMES:
        options = CORPORA[corpus].options() if block == "reader" else keyword_options(SYNTHS[corpus])
        assert new in options and old not in options
    for corpus in CORPORA.values():  # no reader keeps an old name beside the new one (no alias)
        assert not set(corpus.options()) & set(RENAMED), corpus.name


@pytest.mark.parametrize("block, corpus, old, new, value", RENAMES, ids=[f"{r[1]}.{r[2]}" for r in RENAMES])
def test_renamed_key_in_params_names_the_new_one(tmp_path, monkeypatch, block, corpus, old, new, value):
    config = _renamed_block(block, corpus, old, new, value)  # read before leaving the repository root
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"seed": 0, "corpora": {corpus: config}})
    stage = shard_stage if block == "reader" else synth_stage
    with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'") as err:
        stage.main([corpus])
    assert f"corpora.{corpus}.{block}" in str(err.value)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("block, corpus, old, new, value", RENAMES, ids=[f"{r[1]}.{r[2]}" for r in RENAMES])
def test_renamed_key_through_the_python_api_names_the_new_one(tmp_path, block, corpus, old, new, value):
    from mmdata.shards.build import shard_corpus
    from mmdata.synth import write_synth

    match = f"'{old}' is now '{new}'"
    if block == "reader":
        with pytest.raises(ConfigError, match=match):
            CORPORA[corpus].check_options({old: value})
        with pytest.raises(ConfigError, match=match):
            shard_corpus(corpus, tmp_path / "raw", tmp_path / "out", reader={old: value}, progress=False)
    else:
        with pytest.raises(ConfigError, match=match):
            write_synth(corpus, tmp_path / "raw", **{old: value})
    assert not any(tmp_path.iterdir())


def test_an_old_name_is_a_plain_unknown_key_where_its_new_name_is_no_option_either():
    with pytest.raises(ConfigError) as err:
        get_corpus("avmnist").check_options({"size": 32})
    assert "'size'" in str(err.value) and "is now" not in str(err.value)
