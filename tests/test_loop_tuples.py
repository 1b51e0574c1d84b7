"""The loop draws each batch's negatives from (seed, epoch, batch index) with the run's sampler, for any worker
count, and passes them to ``training_step``; the train stage builds the sampler and augmenter from a run block."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mmdata
from methods import late_fusion
from methods.loop import fit
from mmdata.errors import ConfigError
from mmdata.samplers import Sampler, batch_rng, tuple_disturb
from pipelines.train import run_augmenter, run_sampler

FIELDS = ["image", "feat_audio"]
OPTIONS = {"num_negatives": 4, "ratios": {"all": 1, "image": 1, "feat_audio": 2}, "k": 1}


def _recording_method(model_method, seen: list):
    """A method module that records the (keys, tuples) each training step receives, then trains as late fusion."""
    def training_step(model, batch, tuples=None):
        seen.append((list(batch["__key__"]), tuples, model.training))
        return model_method.training_step(model, batch, tuples)

    return SimpleNamespace(training_step=training_step, predict=model_method.predict)


@pytest.mark.parametrize("workers", [0, 2])
def test_tuples_are_tuple_disturb_of_seed_epoch_and_index(toy_split, workers):
    loader = mmdata.load(toy_split, fields=[*FIELDS, "label"], batch_size=6, seed=3, num_workers=workers)
    torch.manual_seed(0)
    model = late_fusion.build_model(loader.shards.features, fields=FIELDS, dim=4, hidden=8)
    seen: list = []
    sampler = Sampler("tuple_disturb", {**OPTIONS, "modalities": FIELDS})
    fit(_recording_method(late_fusion, seen), model, loader, epochs=2, lr=1e-3, device="cpu", seed=3,
        sampler=sampler, log=lambda line: None)
    per_epoch = len(loader)
    assert len(seen) == 2 * per_epoch
    for step, (keys, tuples, training) in enumerate(seen):
        epoch, index = divmod(step, per_epoch)
        expected = tuple_disturb(len(keys), batch_rng(3, epoch, index, "train"), modalities=FIELDS, **OPTIONS)
        assert training and tuples.modalities == tuple(FIELDS)
        np.testing.assert_array_equal(tuples.idx, expected.idx)
    assert seen[0][1].idx.tolist() != seen[per_epoch][1].idx.tolist()  # a new draw each epoch


def test_same_tuples_for_0_and_2_workers(toy_split):
    runs = []
    for workers in (0, 2):
        loader = mmdata.load(toy_split, fields=[*FIELDS, "label"], batch_size=6, seed=3, num_workers=workers)
        torch.manual_seed(0)
        model = late_fusion.build_model(loader.shards.features, fields=FIELDS, dim=4, hidden=8)
        seen: list = []
        fit(_recording_method(late_fusion, seen), model, loader, epochs=1, lr=1e-3, device="cpu", seed=3,
            sampler=Sampler("tuple_disturb", {**OPTIONS, "modalities": FIELDS}), log=lambda line: None)
        runs.append([(keys, tuples.idx.tolist()) for keys, tuples, _ in seen])
    assert runs[0] == runs[1]


def test_no_sampler_passes_none(toy_split):
    loader = mmdata.load(toy_split, fields=[*FIELDS, "label"], batch_size=20)
    model = late_fusion.build_model(loader.shards.features, fields=FIELDS, dim=4, hidden=8)
    seen: list = []
    fit(_recording_method(late_fusion, seen), model, loader, epochs=1, lr=1e-3, device="cpu", log=lambda line: None)
    assert seen and all(tuples is None for _, tuples, _ in seen)


def test_run_blocks_build_sampler_and_augmenter(toy_split):
    exp = {"corpus": "toy", "fields": FIELDS, "samplers": {"marginal_permute": {"num_negatives": 2}}}
    sampler = run_sampler(exp)
    assert sampler.name == "marginal_permute" and sampler.options["modalities"] == FIELDS
    assert run_sampler({"corpus": "toy", "fields": FIELDS}) is None
    with pytest.raises(ConfigError, match="num_negativs"):
        run_sampler({**exp, "samplers": {"marginal_permute": {"num_negativs": 2}}})
    with pytest.raises(ConfigError, match="one sampler"):
        run_sampler({**exp, "samplers": {"marginal_permute": {}, "tuple_disturb": {}}})
    with pytest.raises(ConfigError, match="modality_dropout"):  # a mask, not a negative sampler
        run_sampler({**exp, "samplers": {"modality_dropout": {}}})
    features = mmdata.load(toy_split, batch_size=1).shards.features
    augmenter = run_augmenter({"corpus": "toy", "fields": FIELDS, "augment": {"strength": 0.3}}, features)
    assert augmenter.strength == 0.3 and set(augmenter.policy) <= {"image", "feat_audio", "feat"}
    assert run_augmenter({"corpus": "toy", "fields": FIELDS}, features) is None
