"""Contract test: every registered method module meets methods/protocol.py (signatures), and the loop hands a
method's own ``fit`` the loop's arguments."""
from __future__ import annotations

import inspect
from types import ModuleType

import pytest
import torch

from methods import METHODS, loop
from methods.fusions import FUSIONS
from methods.protocol import Method, OwnSchedule

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _positional(fn) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.kind in POSITIONAL]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_meets_the_protocol(name):
    method = METHODS[name]
    assert isinstance(method, Method), f"methods.{name} lacks one of build_model, training_step, predict, embed"
    for fn in ("build_model", "training_step", "predict", "embed"):
        assert getattr(method, fn).__module__ == method.__name__, f"methods.{name}.{fn} is defined elsewhere"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_build_model_takes_features_then_keyword_options(name):
    params = inspect.signature(METHODS[name].build_model).parameters
    first, *options = params.values()
    assert first.name == "features" and first.kind in POSITIONAL
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in options), f"{name}: options must be keyword-only"
    assert "fields" in params and params["fields"].default is inspect.Parameter.empty
    # params.yaml may leave out any option but the fields: every other one has a default.
    assert all(p.default is not inspect.Parameter.empty for p in options if p.name != "fields")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_step_predict_and_embed_signatures(name):
    method = METHODS[name]
    step = _positional(method.training_step)
    assert [p.name for p in step] == ["model", "batch", "tuples"] and step[2].default is None
    assert [p.name for p in _positional(method.predict)] == ["model", "batch"]
    assert [p.name for p in _positional(method.embed)] == ["model", "batch"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_an_own_fit_takes_the_loop_options(name):
    method = METHODS[name]
    if not hasattr(method, "fit"):
        pytest.skip(f"methods.{name} trains with methods.loop.fit")
    assert isinstance(method, OwnSchedule) and method.fit.__module__ == method.__name__
    expected = list(inspect.signature(loop.fit).parameters)[1:]  # all but ``method``
    assert list(inspect.signature(method.fit).parameters) == expected


def test_the_protocol_states_the_loop_signature():
    assert list(inspect.signature(OwnSchedule.fit).parameters)[1:] == list(inspect.signature(loop.fit).parameters)[1:]


def test_the_loop_hands_over_to_an_own_fit():
    seen = {}
    method = ModuleType("methods.fake")
    method.fit = lambda model, batches, **options: seen.update(options, batches=batches) or {"own": True}
    model = torch.nn.Linear(1, 1)
    assert loop.fit(method, model, [], epochs=3, lr=0.5) == {"own": True}
    assert seen["epochs"] == 3 and seen["lr"] == 0.5 and seen["batches"] == [] and seen["seed"] == 0


def test_fusions_registry_builds_from_dims():
    for name, cls in FUSIONS.items():
        fusion = cls({"a": 3, "b": 2}, 4, 0.0)
        out = fusion({"a": torch.ones(2, 3), "b": torch.ones(2, 2)})
        assert out.shape == (2, 4), name
