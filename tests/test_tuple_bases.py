"""methods/tuple_bases.py: TupleInfoNCE over the dense task nets (``base: rgbd_seg`` on NYUv2, ``base:
point_boxes`` on SUN RGB-D): the adapters' features, the options, the method's steps, its schedule, checkpoints and
the evaluate stage's calls, on tiny batches of the corpora's real schemas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from methods import late_fusion, loop, point_boxes, rgbd_seg, tupleinfonce
from methods.tuple_bases import LATE_FUSION_DEFAULTS, keyword_defaults
from methods.tuple_contrast import (DisturbSampler, contrastive_loss, gathered_parts, kept, placeholder_parts,
                                    positive_view, project, views_loss)
from mmdata.corpora import CORPORA
from mmdata.metrics import HEADLINE, METRICS
from mmdata.rng import make_rng
from mmdata.samplers import drop_tuples, gather, modality_dropout
from mmdata.synth import SYNTHS
from mmdata.types import DROPPED
from pipelines.robustness import robustness_curves
from tests.test_method_contract import PARAMS, schema_batch

#: corpus -> (base, fields, tiny base options).
SETUPS = {"nyuv2": ("rgbd_seg", ["image", "depth", "normal"], {"width": 4}),
          "sunrgbd": ("point_boxes", ["points", "points_rgb", "points_height"],
                      {"dim": 8, "hidden": 16, "seeds": 16, "neighbours": 4, "detections": 4})}
QUIET = {"device": "cpu", "log": lambda line: None}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    """corpus -> the schema of a tiny synthetic corpus read with params.yaml's reader options."""
    out = {}
    for name in SETUPS:
        block = PARAMS["corpora"][name]
        root = SYNTHS[name](tmp_path_factory.mktemp(name), **{**block.get("synth", {}), "train": 2, "test": 1})
        out[name] = CORPORA[name].features(root, **block.get("reader", {}))
    return out


def _model(schemas, corpus, seed=0, **options):
    base, fields, base_options = SETUPS[corpus]
    torch.manual_seed(seed)
    return tupleinfonce.build_model(schemas[corpus], fields=fields, base=base, base_options=base_options,
                                    **{"proj_dim": 8, **options})


def _batch(schemas, corpus, size=5, seed=0):
    return schema_batch(schemas[corpus], CORPORA[corpus].task, size=size, seed=seed)


# --- the adapters ---


def test_rgbd_seg_pooled_features_fuse_to_its_embedding_and_to_materialised_disturbed_batches(schemas):
    model = _model(schemas, "nyuv2").eval()
    batch, fields = _batch(schemas, "nyuv2"), SETUPS["nyuv2"][1]
    tuples = DisturbSampler(tuple(fields), 6)(5, make_rng(1))
    tuples = drop_tuples(tuples, modality_dropout(5, make_rng(2), modalities=fields, p=1.0))
    assert (tuples.idx == DROPPED).any()
    with torch.no_grad():
        assert torch.allclose(model.fusion(model.encode(batch)), rgbd_seg.embed(model.base, batch), atol=1e-5)
        ours = model.fusion(gathered_parts(model.encode(batch), tuples, placeholder_parts(model, batch)))
        inputs = gather({n: batch[n] for n in fields}, tuples)  # dropped inputs become zeros: the placeholder
        flat = {"__key__": [str(i) for i in range(5 * 6)], **{n: inputs[n].flatten(0, 1) for n in fields}}
        assert torch.allclose(ours, rgbd_seg.embed(model.base, flat), atol=1e-5)


def test_point_boxes_parts_are_per_row_per_field_seed_maxima(schemas):
    model = _model(schemas, "sunrgbd").eval()
    batch = _batch(schemas, "sunrgbd", size=3)
    with torch.no_grad():
        parts = model.encode(batch)
        colour = model.encode({**batch, "points_rgb": batch["points_rgb"].index_fill(0, torch.tensor([0]), 0.5)})
        moved = model.encode({**batch, "points": batch["points"].index_fill(0, torch.tensor([1]), 0.0)})
        fused = model.fusion(parts)
    assert {n: tuple(v.shape) for n, v in parts.items()} == {n: (3, 8) for n in SETUPS["sunrgbd"][1]}
    changed = {n for n in parts if not torch.equal(parts[n], colour[n])}
    assert changed == {"points_rgb"} and torch.equal(parts["points_rgb"][1:], colour["points_rgb"][1:])
    # the geometry groups every field's points: all of row 1's features move, no other row's
    assert all(not torch.equal(parts[n][1], moved[n][1]) and torch.equal(parts[n][[0, 2]], moved[n][[0, 2]])
               for n in parts)
    assert fused.shape == (3, 16) and torch.equal(fused, model.base.fusion(parts))


# --- options ---


def test_late_fusion_options_keep_their_defaults_and_the_default_base_is_unchanged():
    own = keyword_defaults(tupleinfonce.build_model)
    assert {k: own[k] for k in LATE_FUSION_DEFAULTS} == LATE_FUSION_DEFAULTS and own["base"] == "late_fusion"
    from tests.test_tupleinfonce import FIELDS, SCHEMA
    torch.manual_seed(3)
    model = tupleinfonce.build_model(SCHEMA, fields=FIELDS, dim=8, hidden=16, proj_dim=4)
    torch.manual_seed(3)  # the old construction: the base, then the projection
    plain, projection = late_fusion.build_model(SCHEMA, fields=FIELDS, dim=8, hidden=16), nn.Linear(16, 4)
    expected = {**{f"base.{k}": v for k, v in plain.state_dict().items()},
                **{f"projection.{k}": v for k, v in projection.state_dict().items()}}
    state = model.state_dict()
    assert list(state) == ["ratio_values", "strength_value", *expected]  # a module's own buffers come first
    assert all(torch.equal(state[k], v) for k, v in expected.items())


@pytest.mark.parametrize("corpus, options, words", [
    ("nyuv2", {"base": "unet"}, ["'unet'", "rgbd_seg", "point_boxes"]),
    ("nyuv2", {"dim": 8}, ["'dim'", "base_options"]),
    ("sunrgbd", {"fusion": "gmu"}, ["'fusion'", "base_options"]),
    ("nyuv2", {"base_options": {"widht": 4}}, ["widht", "width"]),
    ("nyuv2", {"base_options": {"fusion": "early"}}, ["early", "multiscale"]),
    ("sunrgbd", {"probe": "linear"}, ["linear", "finetune"]),
    ("nyuv2", {"base": "late_fusion", "base_options": {"dim": 8}}, ["base_options", "top level"]),
    ("sunrgbd", {"pretrain_lr": 0.0}, ["pretrain_lr"]),
])
def test_bad_base_options_are_refused_by_name(schemas, corpus, options, words):
    base, fields, base_options = SETUPS[corpus]
    with pytest.raises(ValueError) as err:
        tupleinfonce.build_model(schemas[corpus], fields=fields, **{"base": base, "base_options": base_options,
                                                                    **options})
    assert all(w in str(err.value) for w in words), str(err.value)


def test_pretrain_lr_drives_the_label_free_phases_only():
    from tests.test_tupleinfonce import FIELDS, SCHEMA, _batches
    moved = {}
    for pretrain_lr in (None, 1e-12):
        torch.manual_seed(0)
        model = tupleinfonce.build_model(SCHEMA, fields=FIELDS, dim=8, hidden=16, proj_dim=4, candidates=8,
                                         pretrain_epochs=1, pretrain_lr=pretrain_lr)
        before = model.projection.weight.detach().clone()  # fine-tuning leaves the projection alone
        loop.fit(tupleinfonce, model, _batches(2), epochs=1, lr=1e-2, seed=0, **QUIET)
        moved[pretrain_lr] = float((model.projection.weight - before).abs().max())
    assert moved[None] > 1e-4 and moved[1e-12] < 1e-9


def test_dropped_anchor_modalities_take_the_placeholder_feature_not_a_zero_input(schemas):
    """A row whose ``points`` are missing keeps its colour and height features (grouped by its real geometry)."""
    model = _model(schemas, "sunrgbd", objective="infonce").eval()
    batch, fields = _batch(schemas, "sunrgbd", size=4), SETUPS["sunrgbd"][1]
    mask = np.ones((4, 3), dtype=bool)
    mask[0, 0] = mask[1, 2] = False  # row 0 loses points, row 1 loses height
    with torch.no_grad():
        ours = views_loss(model, batch, batch, None, anchor_mask=mask, key_mask=np.ones_like(mask))["loss"]
        full, blank = model.encode(batch), placeholder_parts(model, batch)
        anchor = project(model, kept(full, blank, mask, tuple(fields)))
        expected = contrastive_loss(anchor, project(model, full), temperature=model.temperature)
    assert torch.allclose(ours, expected, atol=1e-6)


# --- the method on both corpora ---


@pytest.mark.parametrize("corpus", sorted(SETUPS))
def test_pretrain_fine_tune_predict_and_embed_on_the_corpus_schema(schemas, corpus):
    model = _model(schemas, corpus, modality_dropout=1.0).train()
    batch = _batch(schemas, corpus)
    out = tupleinfonce.pretrain_step(model, batch, where=(0, 0, 0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0 < float(out["negatives"]) < 3 * 4  # dropped slots removed
    grads = {k for k, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert "projection.weight" in grads and all(any(k.startswith(f"base.encoders.{n}.") for k in grads)
                                                for n in model.fields)
    model.zero_grad()
    step = tupleinfonce.training_step(model, batch)
    step["loss"].backward()
    assert torch.isfinite(step["loss"]) and model.projection.weight.grad is None  # fine-tuning: the base only
    pred_shape = {"nyuv2": (5, 60, 80), "sunrgbd": (5, 16)}[corpus]  # class maps; seed classes (16 seeds)
    assert tuple(step["pred"].shape) == pred_shape and not step["pred"].requires_grad
    model.eval()
    base = {"nyuv2": rgbd_seg, "sunrgbd": point_boxes}[corpus]
    assert torch.equal(tupleinfonce.predict(model, batch), base.predict(model.base, batch))
    assert torch.equal(tupleinfonce.embed(model, batch), base.embed(model.base, batch))
    assert set(tupleinfonce.describe(model)) == {*(f"ratio_{n}" for n in model.fields), "strength"}


def _batches(schemas, corpus, count=2, size=4):
    return [_batch(schemas, corpus, size=size, seed=s) for s in range(count)]


@pytest.mark.parametrize("corpus, options", [("nyuv2", {}), ("sunrgbd", {"search": "ratios", "search_epochs": 1,
                                                                           "clones": 2})])
def test_fit_one_tiny_epoch_and_the_checkpoint_round_trip(schemas, corpus, options):
    model = _model(schemas, corpus, pretrain_epochs=1, candidates=4, **options)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = _batches(schemas, corpus)
    history = loop.fit(tupleinfonce, model, batches, epochs=1, lr=1e-2, seed=0, valid_batches=batches[:1], **QUIET)
    state = model.state_dict()
    assert history["pretrain"]["train_loss"][0] > 0 and history["discrimination"]["candidates"] == 4
    assert not torch.equal(before["projection.weight"], state["projection.weight"])
    assert (history["search"] is not None) == bool(options) and history["best_epoch"] == 0
    reloaded = _model(schemas, corpus, seed=9, **options)
    reloaded.load_state_dict(state)
    reloaded.eval()
    assert torch.equal(tupleinfonce.predict(reloaded, batches[0]), tupleinfonce.predict(model, batches[0]))
    assert tupleinfonce.describe(reloaded) == tupleinfonce.describe(model)


def test_scratch_is_the_plain_base_run(schemas):
    model = _model(schemas, "sunrgbd", objective="none")
    torch.manual_seed(0)  # the base is built first from the same seed, so its initial weights match
    plain = point_boxes.build_model(schemas["sunrgbd"], fields=SETUPS["sunrgbd"][1], **SETUPS["sunrgbd"][2])
    batches = _batches(schemas, "sunrgbd")
    history = loop.fit(tupleinfonce, model, batches, epochs=2, lr=1e-2, seed=4, **QUIET)
    loop.fit(point_boxes, plain, batches, epochs=2, lr=1e-2, seed=4, **QUIET)
    assert history["pretrain"] is None and tupleinfonce.describe(model) == {}
    for (name, ours), theirs in zip(model.base.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(ours, theirs), name


@pytest.mark.parametrize("corpus", sorted(SETUPS))
def test_the_evaluate_stage_scores_describes_and_corrupts_a_dense_run(schemas, corpus):
    """What pipelines/evaluate.py calls: loop.evaluate + the task metrics, describe, robustness curves."""
    model, task = _model(schemas, corpus).eval(), CORPORA[corpus].task
    batches = _batches(schemas, corpus, size=3)
    pred, truth, keys = loop.evaluate(tupleinfonce, model, batches)
    name = HEADLINE[task][0]
    assert len(keys) == 6 and np.isfinite(METRICS[task](pred, truth)[name])
    assert all(np.isfinite(v) for v in tupleinfonce.describe(model).values())
    curves = robustness_curves(tupleinfonce, model, batches, fields=model.fields, levels=(0.0, 1.0), seed=0,
                               metric=lambda p, t: METRICS[task](p, t)[name])
    assert set(curves) == set(model.fields) and all(len(c["drop"]) == 2 for c in curves.values())


# --- the positives ---


def test_positive_views_of_maps_and_point_clouds(schemas):
    maps = _model(schemas, "nyuv2", strength=0.5)
    batch = _batch(schemas, "nyuv2", size=2)
    view = positive_view(maps, batch, (0, 1, 2))
    assert all(not torch.equal(view[n].long(), batch[n].long()) for n in maps.fields)
    row = {"__key__": batch["__key__"][0], **{n: batch[n][0].numpy() for n in maps.fields}}
    alone = maps.augmenter()(row, make_rng(0, "tupleinfonce_positive", 1, 2, batch["__key__"][0]))
    assert all(np.array_equal(alone[n].astype(np.int64), view[n][0].numpy().astype(np.int64)) for n in maps.fields)
    clouds = _model(schemas, "sunrgbd", strength=0.5)
    assert clouds.augmenter().ops_for("points_rgb") == () and clouds.augmenter().ops_for("points_height") == ()
    assert "subsample_points" not in clouds.augmenter().ops_for("points")
    batch = _batch(schemas, "sunrgbd", size=2)
    view = positive_view(clouds, batch, (0, 1, 2))
    assert not torch.equal(view["points"], batch["points"])
    assert view["points_rgb"] is batch["points_rgb"] and view["points_height"] is batch["points_height"]
