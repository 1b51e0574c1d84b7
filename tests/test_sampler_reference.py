"""The samplers, ``gather`` and ``tuple_infonce`` reproduce their pinned outputs (tests/sampler_reference.npz).

Training results in dvc.lock depend on exactly which tuples and permutations are drawn, so speed-ups must keep
every index bitwise (and the number of random draws consumed); losses and gradients may differ only by float
rounding (allclose 1e-6 in float64, 1e-5 in float32). See tests/sampler_cases.py for the cases and how to regenerate them.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.sampler_cases import REFERENCE, cases

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, int], dict[str, np.ndarray]]:
    with np.load(REFERENCE) as stored:
        digests = dict(zip(stored["names"].tolist(), stored["digests"].tolist()))
        floats = {name: stored[name] for name in stored.files if name not in ("names", "digests")}
    return digests, floats


def test_every_case_reproduces_its_reference(reference):
    digests, floats = reference
    found = cases()
    assert sorted(found) == sorted([*digests, *floats])
    changed = [name for name, value in found.items() if isinstance(value, int) and value != digests[name]]
    assert not changed, f"{len(changed)} index outputs changed, e.g. {changed[:5]}"
    drifted = [name for name, value in found.items() if not isinstance(value, int) and not _close(value, floats[name])]
    assert not drifted, f"{len(drifted)} float outputs drifted beyond rounding, e.g. {drifted[:5]}"


def _close(found: np.ndarray, stored: np.ndarray) -> bool:
    """allclose 1e-6 in float64 (the arithmetic), 1e-5 in float32 (its rounding; see tests/sampler_cases.py)."""
    tolerance = 1e-6 if stored.dtype == np.float64 else 1e-5
    return found.dtype == stored.dtype and np.allclose(found, stored, rtol=tolerance, atol=tolerance)
