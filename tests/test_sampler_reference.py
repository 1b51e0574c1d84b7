"""The samplers, ``gather`` and ``tuple_infonce`` reproduce their pinned outputs (tests/sampler_reference.npz).

Training results in dvc.lock depend on exactly which tuples and permutations are drawn, so speed-ups must keep
every index bitwise (and the number of random draws consumed); losses and gradients may differ only by float
rounding (allclose 1e-6). See tests/sampler_cases.py for the cases and how to regenerate them.
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
    drifted = [name for name, value in found.items()
               if not isinstance(value, int) and not np.allclose(value, floats[name], rtol=1e-6, atol=1e-6)]
    assert not drifted, f"{len(drifted)} float outputs drifted beyond 1e-6, e.g. {drifted[:5]}"
