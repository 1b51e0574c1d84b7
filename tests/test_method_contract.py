"""Contract tests: every registered method and every fusion builds, takes a training step, back-propagates,
predicts and embeds on a tiny batch of every corpus's schema, or refuses that corpus at build time with a
ValueError that names the field or label it cannot handle.

Schemas are read from tiny synthetic corpora (the schema a method sees, after the corpus's View), so a new
corpus, method or fusion is covered without editing this file.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from methods import METHODS
from methods import early_fusion
from methods.fusions import FUSIONS
from mmdata.corpora import CORPORA
from mmdata.synth import SYNTHS
from mmdata.types import Features, field_modality

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
#: Smallest sizes each generator accepts: the schema does not depend on them (only the reader options do).
TINY_SYNTH = {
    "avmnist": {"train": 12, "test": 1}, "mosi": {"train": 1, "valid": 1, "test": 1},
    "mosei": {"train": 1, "valid": 1, "test": 1}, "crema_d": {"actors": 2, "sentences": 1, "broken": False},
    "mmimdb": {"train": 2, "valid": 1, "test": 1},
    "hateful_memes": {"train": 3, "valid": 3, "test": 3, "unseen": 3},
    "snli_ve": {"train": 2, "valid": 1, "test": 1}, "nyuv2": {"train": 2, "test": 1},
    "sunrgbd": {"train": 2, "test": 1},
}
#: Tiny model options, passed where a method's build_model takes them.
TINY_MODEL = {"dim": 8, "hidden": 16, "width": 4, "seeds": 8, "neighbours": 4, "detections": 4}
BATCH = 3
#: Methods for any per-sample task, and the corpus tasks only task-specific methods serve.
GENERAL = ("late_fusion", "early_fusion")
TASK_SPECIFIC = ("segmentation", "detection")
#: early_fusion is tested here until it is registered in methods.METHODS.
ALL_METHODS = {**METHODS, "early_fusion": METHODS.get("early_fusion", early_fusion)}
#: (method, corpus) pairs known to break the contract, each with what fixes it; strict xfail, so the entry
#: must go when the fix lands.
KNOWN_GAPS: dict[tuple[str, str], str] = {}  # (method, corpus) -> why it fails today (strict xfail)


def _gap(method: str, corpus: str, *args):
    """pytest.param for (*args), marked strict xfail when (method, corpus) is a known gap."""
    reason = KNOWN_GAPS.get((method, corpus))
    return pytest.param(*args, marks=pytest.mark.xfail(strict=True, reason=reason) if reason else ())


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Features]:
    """corpus -> the features a method sees (the stored schema, viewed when the corpus has a View)."""
    base, out = tmp_path_factory.mktemp("contract"), {}
    for name, generate in SYNTHS.items():
        block = PARAMS["corpora"].get(name, {})
        root = generate(base / name, **{**block.get("synth", {}), **TINY_SYNTH.get(name, {})})
        reader = block.get("reader", {})
        features = CORPORA[name].features(root, **reader)
        view = CORPORA[name].view_for(root, **reader)
        label = next(n for n in features if field_modality(n) == "label")
        out[name] = view.features(features, label) if view else features
    return out


def input_fields(features: Features) -> list[str]:
    """Every field a model may read: all but the label and metadata."""
    return [n for n in features if field_modality(n) not in ("label", "meta")]


def field_sets(features: Features) -> list[list[str]]:
    """The fused run (every input field), the run on the tensor fields (no text) and the unimodal run on the
    first field, each once."""
    every = input_fields(features)
    tensors = [n for n in every if features[n].dtype != "str"]
    out = []
    for fields in (every, tensors, every[:1]):
        if fields and fields not in out:
            out.append(fields)
    return out


def _label(f, task: str, size: int, g: torch.Generator) -> torch.Tensor:
    if task == "detection":  # boxes [cx, cy, cz, l, w, h, heading, class], class -1 = padding
        boxes = torch.rand(size, *f.shape, generator=g)
        boxes[..., 7] = torch.randint(-1, 3, (size, f.shape[0]), generator=g).float()
        return boxes
    if f.classes and f.shape == ():
        return torch.randint(len(f.classes), (size,), generator=g)
    if f.classes and f.dtype.startswith("float"):  # multi-hot
        return (torch.rand(size, *f.shape, generator=g) < 0.3).float()
    if f.classes:  # class maps
        return torch.randint(len(f.classes), (size, *f.shape), generator=g).to(getattr(torch, f.dtype))
    return torch.randn(size, *f.shape, generator=g)


def schema_batch(features: Features, task: str, size: int = BATCH, seed: int = 0) -> dict:
    """A batch dict per the ``mmdata.load`` contract for any schema: [B, *shape] tensors in the stored dtype,
    variable axes padded with ``<field>_lengths`` / ``<field>_mask``, one string per sample for text."""
    g = torch.Generator().manual_seed(seed)
    batch: dict = {"__key__": [f"fake/train/{seed}-{i}" for i in range(size)]}
    for name, f in features.items():
        if field_modality(name) == "label":
            batch[name] = _label(f, task, size, g)
            continue
        if f.dtype == "str":
            batch[name] = [f"words of sample {i}" for i in range(size)] if f.shape == () else None
            continue
        shape = list(f.shape)
        if f.variable_axes:
            lengths = torch.randint(1, 4, (size,), generator=g)
            shape[0] = int(lengths.max())
            mask = torch.arange(shape[0])[None, :] < lengths[:, None]
            batch[f"{name}_lengths"], batch[f"{name}_mask"] = lengths, mask
        if f.dtype in ("uint8", "uint16"):
            x = torch.randint(0, 255, (size, *shape), generator=g, dtype=torch.int32).to(getattr(torch, f.dtype))
        else:
            x = torch.randn(size, *shape, generator=g).to(getattr(torch, f.dtype))
        batch[name] = x
    return {k: v for k, v in batch.items() if v is not None}


def _options(method, **extra) -> dict:
    params = inspect.signature(method.build_model).parameters
    if extra.get("base_options") is not None:  # tupleinfonce over a dense base: the tiny sizes go to the base
        base = extra["base_options"]
        extra = {**extra, "base_options": {**base, **{k: v for k, v in TINY_MODEL.items() if k in base}}}
        return {k: v for k, v in extra.items() if k in params}
    return {k: v for k, v in {**TINY_MODEL, **extra}.items() if k in params}


def check_contract(method, features: Features, fields: list[str], task: str, **options) -> str:
    """Run build_model, training_step, backward, predict and embed; "ran", or "refused" for a build-time
    ValueError naming one of the fields or the label."""
    torch.manual_seed(0)
    try:
        model = method.build_model(features, fields=fields, **_options(method, **options))
    except ValueError as err:
        label = next(n for n in features if field_modality(n) == "label")
        assert any(repr(n) in str(err) or n in str(err).split() for n in [*fields, label]), \
            f"a refusal must name the field or label it cannot handle, got: {err}"
        return "refused"
    batch = schema_batch(features, task)
    model.train()
    out = method.training_step(model, batch, None)
    assert {"loss", "pred"} <= set(out) and out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    assert out["pred"].shape[0] == BATCH and not out["pred"].requires_grad
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), "no gradient reached the parameters"
    model.eval()
    scores = method.predict(model, batch)
    assert scores.shape[0] == BATCH and not scores.requires_grad and torch.isfinite(scores.float()).all()
    emb = method.embed(model, batch)
    assert emb.dim() == 2 and emb.shape[0] == BATCH and torch.isfinite(emb).all()
    return "ran"


@pytest.mark.parametrize("name, corpus", [_gap(m, c, m, c) for m in sorted(ALL_METHODS) for c in sorted(CORPORA)])
def test_method_runs_or_refuses_each_corpus(schemas, name, corpus):
    task = CORPORA[corpus].task
    results = [check_contract(ALL_METHODS[name], schemas[corpus], fields, task)
               for fields in field_sets(schemas[corpus])]
    if name in GENERAL and task not in TASK_SPECIFIC:
        assert "ran" in results, f"{name} refused every field set of {corpus}, a {task} corpus it serves"


@pytest.mark.parametrize("fusion, corpus", [_gap("late_fusion", c, f, c) for f in sorted(FUSIONS)
                                            for c in sorted(CORPORA)])
def test_fusion_runs_in_late_fusion_on_each_corpus(schemas, fusion, corpus):
    method = ALL_METHODS["late_fusion"]
    check_contract(method, schemas[corpus], input_fields(schemas[corpus]), CORPORA[corpus].task, fusion=fusion)


@pytest.mark.parametrize("name", sorted(ALL_METHODS))
def test_every_method_builds_on_some_corpus(schemas, name):
    """A method refusing every corpus would pass the contract test vacuously."""
    built = []
    for corpus, features in schemas.items():
        for fields in field_sets(features) if (name, corpus) not in KNOWN_GAPS else ():
            try:
                ALL_METHODS[name].build_model(features, fields=fields, **_options(ALL_METHODS[name]))
                built.append(corpus)
            except ValueError:
                pass
    assert built, f"methods.{name} refuses every corpus"


#: Every run configured in params.yaml, the full suite included (dvc repro trains only the quick suite).
CONFIGURED = [(corpus, run) for corpus, runs in PARAMS["experiments"].items() for run in runs]


@pytest.mark.parametrize("corpus, run", CONFIGURED, ids=[f"{c}.{r}" for c, r in CONFIGURED])
def test_every_configured_run_builds_and_steps(schemas, corpus, run):
    """The full suite's runs (not trained by the default repro) build with their own options and take a
    training step on their corpus's schema: a bad option fails here, not an hour into `suite=full`."""
    exp = PARAMS["experiments"][corpus][run]
    method = METHODS[exp["method"]]
    options = {k: v for k, v in exp.get("model", {}).items() if k not in TINY_MODEL}  # sizes stay tiny
    assert check_contract(method, schemas[corpus], list(exp["fields"]), CORPORA[corpus].task, **options) == "ran"
