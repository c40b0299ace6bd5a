"""Every experiment's grids make sense at every scale, checked without running anything."""

import numpy as np
import pytest

from ksdp.experiments import run
from ksdp.experiments.specs import EXPERIMENTS, SCALES

CASES = [(e, s) for e in EXPERIMENTS for s in SCALES]


@pytest.mark.parametrize("name,scale", CASES)
def test_grids(name, scale):
    exp = EXPERIMENTS[name]
    train, held, extra = exp.values(scale)
    assert len(train) >= 2 and len(held) >= 1 and len(extra) >= 1
    assert np.all(np.diff(train) > 0), "training values must increase"
    ts = np.sort(train)
    for v in held:
        # strictly between two neighbouring training values (so it is interpolation, and not a training value)
        k = np.searchsorted(ts, v)
        assert 0 < k < len(ts) and ts[k - 1] < v < ts[k] and not np.isclose(v, ts).any(), (v, ts)
    for v in extra:
        assert v < ts[0] or v > ts[-1], (v, ts)
    if exp.eta == "time":
        # snapshot times on the dt grid
        everything = np.concatenate([train, held, extra])
        assert np.allclose(np.rint(everything / run.DT) * run.DT, everything, atol=1e-9)
        assert np.all(everything >= 0)
    else:
        assert np.all(np.concatenate([train, held, extra]) > 0)  # log10 A


@pytest.mark.parametrize("name,scale", CASES)
def test_every_kind_is_present_in_the_values(name, scale):
    # the evaluation walks _all_values; each kind must survive the de-duplication
    exp = EXPERIMENTS[name]
    train, held, extra = exp.values(scale)
    values = run._all_values(exp, scale)
    assert len(values) == len(train) + len(held) + len(extra)
